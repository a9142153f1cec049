package webui

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/dyad-ha/dyad/services/unit"
	"github.com/gin-gonic/gin"
)

// StorageSource manages the unit's mirrored storage. It is apart from Source
// so that a Source without storage keeps compiling; Config.Storage may be nil.
//
// Errors: ErrNotFound (wrapped or not) for an unknown volume, snapshot or
// disk; ErrInvalid wrapped with the reason for a request it refuses;
// ErrConflict wrapped with the reason when the unit's state does not allow
// it (a volume syncing, a PM absent, a foreign disk without erase...). The
// API shows the wrapped message to the operator.
type StorageSource interface {
	Volumes(ctx context.Context) ([]unit.Volume, error)
	Volume(ctx context.Context, id int) (unit.Volume, error)
	// CreateVolume creates a volume on both PMs. It returns once the volume
	// is recorded; its legs are prepared and synced in the background
	// (State Creating, then Syncing).
	CreateVolume(ctx context.Context, spec unit.VolumeSpec) (unit.Volume, error)
	// GrowVolume grows a volume to sizeBytes on both PMs; it never shrinks.
	GrowVolume(ctx context.Context, id int, sizeBytes int64) (unit.Volume, error)
	// DeleteVolume starts deleting a volume: its legs are removed on both
	// PMs in the background (State Deleting until then).
	DeleteVolume(ctx context.Context, id int) error
	// ResolveSplitBrain keeps the data of survivorPM's leg; the other leg is
	// kept as a snapshot and resynced from the survivor.
	ResolveSplitBrain(ctx context.Context, id, survivorPM int) (unit.Volume, error)
	// DeleteSnapshot deletes a kept snapshot of a volume, such as the losing
	// side of a split brain.
	DeleteSnapshot(ctx context.Context, id int, name string) (unit.Volume, error)
	StorageGroups(ctx context.Context) ([]unit.StorageGroup, error)
	// Disks returns the whole disks of both PMs.
	Disks(ctx context.Context) ([]unit.Disk, error)
	// ActivateDisk makes a disk of PM pm a member of storage group group
	// (0: the Source's default group). A foreign disk is activated only with
	// erase; without it the Source answers ErrConflict.
	ActivateDisk(ctx context.Context, pm int, disk string, group int, erase bool) (unit.Disk, error)
}

// maxStorageBody bounds a storage request body: a few small fields.
const maxStorageBody = 64 << 10

// maxVolumeName is the longest volume name.
const maxVolumeName = 64

// maxSnapshotName and maxDiskName bound names taken from the URL or a body
// before they reach the Source, which hands them to LVM.
const (
	maxSnapshotName = 128
	maxDiskName     = 32
)

// requireStorage answers 503 when the server has no StorageSource.
func (s *Server) requireStorage(c *gin.Context) {
	if s.cfg.Storage == nil {
		apiError(c, http.StatusServiceUnavailable, "storage not available")
	}
}

// sourceFailed answers an error of a StorageSource or VMSource by the
// sentinel it wraps: notFound is the message for a bare ErrNotFound, doing
// names the action for a 500 ("create volume").
func (s *Server) sourceFailed(c *gin.Context, err error, doing, notFound string) {
	switch {
	case errors.Is(err, ErrNotFound):
		msg := notFound
		if err != ErrNotFound { // the Source said what it did not find
			msg = err.Error()
		}
		apiError(c, http.StatusNotFound, msg)
	case errors.Is(err, ErrInvalid):
		apiError(c, http.StatusBadRequest, err.Error())
	case errors.Is(err, ErrConflict):
		apiError(c, http.StatusConflict, err.Error())
	default:
		s.log.Error("webui: request failed", "action", doing, "err", err)
		apiError(c, http.StatusInternalServerError, "cannot "+doing+": "+err.Error())
	}
}

// volumeID reads the :id of a volume route; it answers 400 itself.
func volumeID(c *gin.Context) (int, bool) {
	raw := c.Param("id")
	id, err := strconv.Atoi(raw)
	if err != nil || id < 1 {
		apiError(c, http.StatusBadRequest, "invalid volume id "+strconv.Quote(raw)+": want a positive integer")
		return 0, false
	}
	return id, true
}

// readBody reads a bounded request body; it answers 400 itself.
func readBody(c *gin.Context) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, maxStorageBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			apiError(c, http.StatusBadRequest, fmt.Sprintf("invalid body: larger than %d bytes", maxStorageBody))
			return nil, false
		}
		apiError(c, http.StatusBadRequest, "reading body: "+err.Error())
		return nil, false
	}
	return body, true
}

// decodeStrict decodes one JSON object into dst, refusing unknown fields,
// wrong types and anything after the object. shape shows the caller what
// to send.
func decodeStrict(body []byte, dst any, shape string) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("invalid body: empty; want %s", shape)
		}
		return fmt.Errorf("invalid JSON body (want %s): %w", shape, err)
	}
	// Token, unlike More, also sees a stray ']' or '}' after the object.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("invalid JSON body: trailing data after the object")
	}
	return nil
}

// nameChars reports whether s is 1..max characters of [A-Za-z0-9._-] and
// does not start with '-', so that no name reads as an option to the tools
// the Source runs.
func nameChars(s string, max int) bool {
	if len(s) == 0 || len(s) > max || s[0] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '.' || b == '_' || b == '-') {
			return false
		}
	}
	return true
}

// objectName is nameChars for names the Source may turn into device or
// file names (disks, snapshots): these may not start with '.' either.
func objectName(s string, max int) bool {
	return nameChars(s, max) && s[0] != '.'
}

const volumeSpecShape = `{"name": "...", "size_bytes": N, "group": G}`

// parseVolumeSpec decodes the body of POST /api/v1/volumes.
func parseVolumeSpec(body []byte) (unit.VolumeSpec, error) {
	var req struct {
		Name      *string `json:"name"`
		SizeBytes *int64  `json:"size_bytes"`
		Group     *int    `json:"group"`
	}
	if err := decodeStrict(body, &req, volumeSpecShape); err != nil {
		return unit.VolumeSpec{}, err
	}
	switch {
	case req.Name == nil:
		return unit.VolumeSpec{}, errors.New(`invalid body: missing field "name"`)
	case !nameChars(*req.Name, maxVolumeName):
		return unit.VolumeSpec{}, fmt.Errorf("invalid volume name %q: want 1 to %d letters, digits, '.', '_' or '-', not starting with '-'", *req.Name, maxVolumeName)
	case req.SizeBytes == nil:
		return unit.VolumeSpec{}, errors.New(`invalid body: missing field "size_bytes"`)
	case *req.SizeBytes <= 0:
		return unit.VolumeSpec{}, fmt.Errorf(`invalid size_bytes %d: want a positive number of bytes`, *req.SizeBytes)
	case req.Group != nil && *req.Group < 0:
		return unit.VolumeSpec{}, fmt.Errorf(`invalid group %d: want a storage group id, or 0 or none for the first group with room`, *req.Group)
	}
	spec := unit.VolumeSpec{Name: *req.Name, SizeBytes: *req.SizeBytes}
	if req.Group != nil {
		spec.Group = *req.Group
	}
	return spec, nil
}

// parseGrow decodes the body of POST /api/v1/volumes/:id/actions/grow.
func parseGrow(body []byte) (int64, error) {
	var req struct {
		SizeBytes *int64 `json:"size_bytes"`
	}
	if err := decodeStrict(body, &req, `{"size_bytes": N}`); err != nil {
		return 0, err
	}
	switch {
	case req.SizeBytes == nil:
		return 0, errors.New(`invalid body: missing field "size_bytes"`)
	case *req.SizeBytes <= 0:
		return 0, fmt.Errorf(`invalid size_bytes %d: want a positive number of bytes`, *req.SizeBytes)
	}
	return *req.SizeBytes, nil
}

// parseResolve decodes the body of POST /api/v1/volumes/:id/actions/resolve.
func parseResolve(body []byte) (int, error) {
	var req struct {
		Survivor *int `json:"survivor"`
	}
	if err := decodeStrict(body, &req, `{"survivor": PM}`); err != nil {
		return 0, err
	}
	switch {
	case req.Survivor == nil:
		return 0, errors.New(`invalid body: missing field "survivor" (the PM whose data is kept)`)
	case *req.Survivor < 1:
		return 0, fmt.Errorf("invalid survivor %d: want a PM number", *req.Survivor)
	}
	return *req.Survivor, nil
}

// activateRequest is the body of POST /api/v1/disks/actions/activate.
type activateRequest struct {
	PM    int
	Disk  string
	Group int
	Erase bool
}

const activateShape = `{"pm": N, "disk": "vdb", "group": G, "erase": false}`

func parseActivate(body []byte) (activateRequest, error) {
	var req struct {
		PM    *int    `json:"pm"`
		Disk  *string `json:"disk"`
		Group *int    `json:"group"`
		Erase *bool   `json:"erase"`
	}
	if err := decodeStrict(body, &req, activateShape); err != nil {
		return activateRequest{}, err
	}
	switch {
	case req.PM == nil:
		return activateRequest{}, errors.New(`invalid body: missing field "pm"`)
	case *req.PM < 1:
		return activateRequest{}, fmt.Errorf("invalid pm %d: want a PM number", *req.PM)
	case req.Disk == nil:
		return activateRequest{}, errors.New(`invalid body: missing field "disk"`)
	case !objectName(*req.Disk, maxDiskName):
		return activateRequest{}, fmt.Errorf("invalid disk %q: want a kernel disk name such as \"vdb\"", *req.Disk)
	case req.Group != nil && *req.Group < 0:
		return activateRequest{}, fmt.Errorf("invalid group %d: want a storage group id", *req.Group)
	}
	out := activateRequest{PM: *req.PM, Disk: *req.Disk}
	if req.Group != nil {
		out.Group = *req.Group
	}
	if req.Erase != nil {
		out.Erase = *req.Erase
	}
	return out, nil
}

func (s *Server) volumes(c *gin.Context) {
	vols, err := s.cfg.Storage.Volumes(c.Request.Context())
	if err != nil {
		s.sourceFailed(c, err, "list volumes", "no volumes")
		return
	}
	if vols == nil {
		vols = []unit.Volume{}
	}
	c.JSON(http.StatusOK, vols)
}

func volumeNotFound(id int) string { return "volume " + strconv.Itoa(id) + " not found" }

func (s *Server) volume(c *gin.Context) {
	id, ok := volumeID(c)
	if !ok {
		return
	}
	v, err := s.cfg.Storage.Volume(c.Request.Context(), id)
	if err != nil {
		s.sourceFailed(c, err, "read volume "+strconv.Itoa(id), volumeNotFound(id))
		return
	}
	c.JSON(http.StatusOK, v)
}

func (s *Server) createVolume(c *gin.Context) {
	body, ok := readBody(c)
	if !ok {
		return
	}
	spec, err := parseVolumeSpec(body)
	if err != nil {
		apiError(c, http.StatusBadRequest, err.Error())
		return
	}
	v, err := s.cfg.Storage.CreateVolume(c.Request.Context(), spec)
	if err != nil {
		// Only a named group can be missing.
		s.sourceFailed(c, err, "create volume "+strconv.Quote(spec.Name), "storage group "+strconv.Itoa(spec.Group)+" not found")
		return
	}
	s.log.Info("webui: volume created", "volume", v.ID, "name", v.Name, "size_bytes", v.SizeBytes, "group", v.Group)
	c.Header("Location", "/api/v1/volumes/"+strconv.Itoa(v.ID))
	c.JSON(http.StatusCreated, v)
}

func (s *Server) growVolume(c *gin.Context) {
	id, ok := volumeID(c)
	if !ok {
		return
	}
	body, ok := readBody(c)
	if !ok {
		return
	}
	size, err := parseGrow(body)
	if err != nil {
		apiError(c, http.StatusBadRequest, err.Error())
		return
	}
	v, err := s.cfg.Storage.GrowVolume(c.Request.Context(), id, size)
	if err != nil {
		s.sourceFailed(c, err, "grow volume "+strconv.Itoa(id), volumeNotFound(id))
		return
	}
	s.log.Info("webui: volume growing", "volume", id, "size_bytes", size)
	c.JSON(http.StatusAccepted, v)
}

// deleteReply is the body of DELETE /api/v1/volumes/:id.
type deleteReply struct {
	ID     int    `json:"id"`
	Status string `json:"status"`
}

func (s *Server) deleteVolume(c *gin.Context) {
	id, ok := volumeID(c)
	if !ok {
		return
	}
	if err := s.cfg.Storage.DeleteVolume(c.Request.Context(), id); err != nil {
		s.sourceFailed(c, err, "delete volume "+strconv.Itoa(id), volumeNotFound(id))
		return
	}
	s.log.Info("webui: volume deleting", "volume", id)
	c.JSON(http.StatusAccepted, deleteReply{ID: id, Status: "deleting"})
}

func (s *Server) resolveSplitBrain(c *gin.Context) {
	id, ok := volumeID(c)
	if !ok {
		return
	}
	body, ok := readBody(c)
	if !ok {
		return
	}
	survivor, err := parseResolve(body)
	if err != nil {
		apiError(c, http.StatusBadRequest, err.Error())
		return
	}
	v, err := s.cfg.Storage.ResolveSplitBrain(c.Request.Context(), id, survivor)
	if err != nil {
		s.sourceFailed(c, err, "resolve the split brain of volume "+strconv.Itoa(id), volumeNotFound(id))
		return
	}
	s.log.Info("webui: split brain resolved", "volume", id, "survivor", survivor)
	c.JSON(http.StatusAccepted, v)
}

func (s *Server) deleteSnapshot(c *gin.Context) {
	id, ok := volumeID(c)
	if !ok {
		return
	}
	name := c.Param("name")
	if !objectName(name, maxSnapshotName) {
		apiError(c, http.StatusBadRequest, "invalid snapshot name "+strconv.Quote(name))
		return
	}
	v, err := s.cfg.Storage.DeleteSnapshot(c.Request.Context(), id, name)
	if err != nil {
		s.sourceFailed(c, err, "delete snapshot "+strconv.Quote(name)+" of volume "+strconv.Itoa(id),
			"snapshot "+strconv.Quote(name)+" of volume "+strconv.Itoa(id)+" not found")
		return
	}
	s.log.Info("webui: snapshot deleting", "volume", id, "snapshot", name)
	c.JSON(http.StatusAccepted, v)
}

func (s *Server) storageGroups(c *gin.Context) {
	groups, err := s.cfg.Storage.StorageGroups(c.Request.Context())
	if err != nil {
		s.sourceFailed(c, err, "list storage groups", "no storage groups")
		return
	}
	if groups == nil {
		groups = []unit.StorageGroup{}
	}
	c.JSON(http.StatusOK, groups)
}

func (s *Server) disks(c *gin.Context) {
	disks, err := s.cfg.Storage.Disks(c.Request.Context())
	if err != nil {
		s.sourceFailed(c, err, "list disks", "no disks")
		return
	}
	if disks == nil {
		disks = []unit.Disk{}
	}
	c.JSON(http.StatusOK, disks)
}

func (s *Server) activateDisk(c *gin.Context) {
	body, ok := readBody(c)
	if !ok {
		return
	}
	req, err := parseActivate(body)
	if err != nil {
		apiError(c, http.StatusBadRequest, err.Error())
		return
	}
	d, err := s.cfg.Storage.ActivateDisk(c.Request.Context(), req.PM, req.Disk, req.Group, req.Erase)
	if err != nil {
		s.sourceFailed(c, err, fmt.Sprintf("activate disk %s of PM %d", req.Disk, req.PM),
			fmt.Sprintf("disk %s of PM %d not found", req.Disk, req.PM))
		return
	}
	s.log.Info("webui: disk activated", "pm", req.PM, "disk", req.Disk, "group", d.Group, "erase", req.Erase)
	c.JSON(http.StatusOK, d)
}
