package webui

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"

	"github.com/dyad-ha/dyad/services/unit"
	"github.com/dyad-ha/dyad/services/vm"
	"github.com/gin-gonic/gin"
)

// requireVMs answers 404 on a server without VMs, as for a route that does
// not exist: a unit without a VMSource has no VM API.
func (s *Server) requireVMs(c *gin.Context) {
	if s.cfg.VMs == nil {
		apiError(c, http.StatusNotFound, "no such API endpoint: "+c.Request.Method+" "+c.Request.URL.Path+" (this unit has no virtual machines)")
	}
}

// vmRoutes registers the VM API on g, the authenticated /api/v1 group that
// requireVMs guards. The console websockets are registered by
// consoleRoutes.
func (s *Server) vmRoutes(g *gin.RouterGroup) {
	g.GET("/vms", s.vms)
	g.POST("/vms", s.createVM)
	g.GET("/vms/:id", s.vm)
	g.DELETE("/vms/:id", s.removeVM)
	g.POST("/vms/:id/config", s.configVM)
	g.POST("/vms/:id/actions/:action", s.vmAction)
	g.GET("/vms/:id/serial-log", s.serialLog)
}

// Limits on the shape of VM requests. The resource rules (vCPUs, memory,
// volumes of the unit...) are the VMSource's; these only keep nonsense and
// overflows away from it.
const (
	maxMiB       = math.MaxInt64 >> 20 // the most MiB whose byte count fits an int64
	maxShutdownS = 24 * 60 * 60
)

// vmCommand maps an action slug of the URL to the command of DESIGN.md §4.
func vmCommand(slug string) (vm.Command, bool) {
	switch slug {
	case "start":
		return vm.Start, true
	case "shutdown":
		return vm.Shutdown, true
	case "poweroff":
		return vm.PowerOff, true
	case "dump":
		return vm.Dump, true
	case "boot-from-cd":
		return vm.BootFromCD, true
	case "migrate":
		return vm.Migrate, true
	case "reset-device":
		return vm.ResetDevice, true
	}
	return "", false
}

// notAllowedReply is the 409 body of a command the VM's or PM's state
// refuses: the client learns what it may do instead.
type notAllowedReply struct {
	Error   string   `json:"error"`
	State   string   `json:"state"`
	Allowed []string `json:"allowed"`
}

// resourceReply is the 400 body of a VM that breaks the resource rules:
// every problem at once, so the operator fixes them in one go.
type resourceReply struct {
	Error    string       `json:"error"`
	Problems []vm.Problem `json:"problems"`
}

// vmFailed answers a VMSource error. The two VM-specific errors carry more
// than a message; the rest is answered like a storage error.
func (s *Server) vmFailed(c *gin.Context, err error, doing, notFound string) {
	var na *vm.NotAllowedError
	var re *vm.ResourceError
	switch {
	case errors.As(err, &na):
		allowed := make([]string, len(na.Allowed))
		for i, a := range na.Allowed {
			allowed[i] = string(a)
		}
		c.AbortWithStatusJSON(http.StatusConflict, notAllowedReply{Error: err.Error(), State: string(na.State), Allowed: allowed})
	case errors.As(err, &re):
		probs := re.Problems
		if probs == nil {
			probs = []vm.Problem{}
		}
		c.AbortWithStatusJSON(http.StatusBadRequest, resourceReply{Error: err.Error(), Problems: probs})
	default:
		s.sourceFailed(c, err, doing, notFound)
	}
}

// vmID reads the :id of a VM route; it answers 400 itself.
func vmID(c *gin.Context) (int, bool) {
	raw := c.Param("id")
	id, err := strconv.Atoi(raw)
	if err != nil || id < 1 {
		apiError(c, http.StatusBadRequest, "invalid VM id "+strconv.Quote(raw)+": want a positive integer")
		return 0, false
	}
	return id, true
}

func vmNotFound(id int) string { return "VM " + strconv.Itoa(id) + " not found" }

const vmCreateShape = `{"name": "...", "vcpus": N, "memory_mib": M, "volumes": [{"name": "...", "size_mib": S, "boot": true} or {"existing": ID}], "nics": [{"network": "...", "mac": "..."}], "boot": "disk|cd|test-guest", "cd": "NAME.iso", "start": false}`

// parseVMCreate decodes and checks the body of POST /api/v1/vms.
func parseVMCreate(body []byte) (unit.VMCreate, error) {
	var req unit.VMCreate
	if err := decodeStrict(body, &req, vmCreateShape); err != nil {
		return unit.VMCreate{}, err
	}
	if err := vm.CheckName(req.Name); err != nil {
		return unit.VMCreate{}, fmt.Errorf("invalid VM name: %w", err)
	}
	if req.VCPUs < 0 {
		return unit.VMCreate{}, fmt.Errorf("invalid vcpus %d: want a positive number", req.VCPUs)
	}
	if err := checkMiB("memory_mib", req.MemoryMiB); err != nil {
		return unit.VMCreate{}, err
	}
	if len(req.Volumes) == 0 {
		return unit.VMCreate{}, errors.New(`invalid body: missing field "volumes": a VM needs a boot volume`)
	}
	if err := checkVolumeRequests("volumes", req.Volumes); err != nil {
		return unit.VMCreate{}, err
	}
	nics, err := checkNICs(req.NICs)
	if err != nil {
		return unit.VMCreate{}, err
	}
	req.NICs = nics
	switch req.Boot {
	case "", "disk", "cd", "test-guest":
	default:
		return unit.VMCreate{}, fmt.Errorf(`invalid boot %q: want "disk", "cd" or "test-guest"`, req.Boot)
	}
	if err := checkCD(req.CD); err != nil {
		return unit.VMCreate{}, err
	}
	if req.Boot == "cd" && req.CD == "" {
		return unit.VMCreate{}, errors.New(`invalid body: boot "cd" needs "cd", the VCD to boot from`)
	}
	return req, nil
}

const vmConfigShape = `{"vcpus": N, "memory_mib": M, "add_volumes": [...], "detach": [ID], "delete": [ID], "nics": [...], "placement": {"policy": "auto|manual|mixed", "pm": PM}}`

// parseVMConfig decodes and checks the body of POST /api/v1/vms/:id/config.
func parseVMConfig(body []byte) (unit.VMConfig, error) {
	var req unit.VMConfig
	if err := decodeStrict(body, &req, vmConfigShape); err != nil {
		return unit.VMConfig{}, err
	}
	// A placement alone is a change too: the unit takes it in any state.
	if req.VCPUs == nil && req.MemoryMiB == nil && len(req.AddVolumes) == 0 && len(req.Detach) == 0 &&
		len(req.Delete) == 0 && req.NICs == nil && req.Placement == nil {
		return unit.VMConfig{}, fmt.Errorf("invalid body: nothing to change; want %s", vmConfigShape)
	}
	if req.VCPUs != nil && *req.VCPUs < 0 {
		return unit.VMConfig{}, fmt.Errorf("invalid vcpus %d: want a positive number", *req.VCPUs)
	}
	if req.MemoryMiB != nil {
		if err := checkMiB("memory_mib", *req.MemoryMiB); err != nil {
			return unit.VMConfig{}, err
		}
	}
	if err := checkVolumeRequests("add_volumes", req.AddVolumes); err != nil {
		return unit.VMConfig{}, err
	}
	seen := map[int]string{}
	for _, list := range []struct {
		field string
		ids   []int
	}{{"detach", req.Detach}, {"delete", req.Delete}} {
		if len(list.ids) > vm.MaxVolumes {
			return unit.VMConfig{}, fmt.Errorf("invalid %s: %d volumes; a unit holds at most %d", list.field, len(list.ids), vm.MaxVolumes)
		}
		for _, id := range list.ids {
			if id < 1 {
				return unit.VMConfig{}, fmt.Errorf("invalid %s: volume id %d: want a positive integer", list.field, id)
			}
			if prev, ok := seen[id]; ok {
				return unit.VMConfig{}, fmt.Errorf("invalid %s: volume %d is already in %q", list.field, id, prev)
			}
			seen[id] = list.field
		}
	}
	if req.NICs != nil {
		nics, err := checkNICs(*req.NICs)
		if err != nil {
			return unit.VMConfig{}, err
		}
		if nics == nil {
			nics = []unit.VMNICRequest{} // no NICs at all, not "keep them"
		}
		req.NICs = &nics
	}
	return req, nil
}

// parseVMAction decodes and checks the body of POST
// /api/v1/vms/:id/actions/:action. The body may be empty; a field that
// the command does not take is refused rather than ignored, so that a
// "to" sent with start does not pass for a migration.
func parseVMAction(cmd vm.Command, body []byte) (unit.VMAction, error) {
	var req unit.VMAction
	if len(bytes.TrimSpace(body)) == 0 {
		return req, nil
	}
	if err := decodeStrict(body, &req, `{"timeout_seconds": N} (shutdown), {"to": PM} (migrate), {"cd": "NAME.iso"} (boot-from-cd) or nothing`); err != nil {
		return unit.VMAction{}, err
	}
	takes := func(field string, set bool, want vm.Command) error {
		if set && cmd != want {
			return fmt.Errorf("invalid body: %q applies to %s, not to %s", field, want, cmd)
		}
		return nil
	}
	for _, err := range []error{
		takes("timeout_seconds", req.TimeoutSeconds != 0, vm.Shutdown),
		takes("to", req.To != 0, vm.Migrate),
		takes("cd", req.CD != "", vm.BootFromCD),
	} {
		if err != nil {
			return unit.VMAction{}, err
		}
	}
	switch {
	case req.TimeoutSeconds < 0 || req.TimeoutSeconds > maxShutdownS:
		return unit.VMAction{}, fmt.Errorf("invalid timeout_seconds %d: want 1 to %d seconds, or none for the default", req.TimeoutSeconds, maxShutdownS)
	case req.To < 0:
		return unit.VMAction{}, fmt.Errorf("invalid to %d: want a PM number, or none for the other PM", req.To)
	}
	if err := checkCD(req.CD); err != nil {
		return unit.VMAction{}, err
	}
	return req, nil
}

// parseDeleteData reads the delete_data query parameter of DELETE
// /api/v1/vms/:id; absent means false.
func parseDeleteData(c *gin.Context) (bool, error) {
	vals, ok := c.GetQueryArray("delete_data")
	if !ok {
		return false, nil
	}
	if len(vals) != 1 {
		return false, errors.New("invalid delete_data: given more than once")
	}
	v, err := strconv.ParseBool(vals[0])
	if err != nil {
		return false, fmt.Errorf("invalid delete_data %q: want true or false", vals[0])
	}
	return v, nil
}

func checkMiB(field string, n int64) error {
	if n < 0 || n > maxMiB {
		return fmt.Errorf("invalid %s %d: want a number of MiB from 0 to %d", field, n, maxMiB)
	}
	return nil
}

// checkVolumeRequests checks the volumes of a create or config body.
func checkVolumeRequests(field string, vols []unit.VMVolumeRequest) error {
	if len(vols) > vm.MaxVolumes {
		return fmt.Errorf("invalid %s: %d volumes; a unit holds at most %d", field, len(vols), vm.MaxVolumes)
	}
	for i, v := range vols {
		n := i + 1
		switch {
		case v.Existing < 0:
			return fmt.Errorf("invalid %s: volume %d: existing %d: want a volume id", field, n, v.Existing)
		case v.Existing > 0:
			if v.Name != "" || v.SizeMiB != 0 || v.Group != 0 {
				return fmt.Errorf("invalid %s: volume %d: give either \"existing\" (a volume of the unit) or \"name\" and \"size_mib\" (a new one), not both", field, n)
			}
			continue
		}
		if err := vm.CheckName(v.Name); err != nil {
			return fmt.Errorf("invalid %s: volume %d: %w", field, n, err)
		}
		if v.SizeMiB <= 0 || v.SizeMiB > maxMiB {
			return fmt.Errorf("invalid %s: volume %q: size_mib %d: want a positive number of MiB", field, v.Name, v.SizeMiB)
		}
		if v.Group < 0 {
			return fmt.Errorf("invalid %s: volume %q: group %d: want a storage group id, or none", field, v.Name, v.Group)
		}
	}
	return nil
}

// checkNICs checks the NICs of a request and writes each MAC override in
// its canonical form (aa:bb:cc:dd:ee:ff): net.ParseMAC also reads
// "AA-BB-..." and "aabb.ccdd.eeff", which the Source need not know.
func checkNICs(nics []unit.VMNICRequest) ([]unit.VMNICRequest, error) {
	if len(nics) == 0 {
		return nil, nil
	}
	out := make([]unit.VMNICRequest, len(nics))
	for i, n := range nics {
		if err := vm.CheckName(n.Network); err != nil {
			return nil, fmt.Errorf("invalid nics: network %d: %w", i+1, err)
		}
		out[i] = n
		if n.MAC == "" {
			continue
		}
		mac, err := net.ParseMAC(n.MAC)
		if err != nil {
			return nil, fmt.Errorf("invalid nics: network %d: MAC %q: want six bytes such as 52:54:00:12:34:56", i+1, n.MAC)
		}
		if err := vm.CheckMAC(mac); err != nil {
			return nil, fmt.Errorf("invalid nics: network %d: %w", i+1, err)
		}
		out[i].MAC = mac.String()
	}
	return out, nil
}

// checkCD checks the name of a VCD ("" for none): an .iso of the PMs' VCD
// folder, without a path.
func checkCD(name string) error {
	if name == "" {
		return nil
	}
	if err := vm.CheckCD(name); err != nil {
		return fmt.Errorf("invalid cd: %w", err)
	}
	return nil
}

func (s *Server) vms(c *gin.Context) {
	list, err := s.cfg.VMs.VMs(c.Request.Context())
	if err != nil {
		s.vmFailed(c, err, "list VMs", "no VMs")
		return
	}
	if list == nil {
		list = []unit.VM{}
	}
	c.JSON(http.StatusOK, list)
}

func (s *Server) vm(c *gin.Context) {
	id, ok := vmID(c)
	if !ok {
		return
	}
	v, err := s.cfg.VMs.VM(c.Request.Context(), id)
	if err != nil {
		s.vmFailed(c, err, "read VM "+strconv.Itoa(id), vmNotFound(id))
		return
	}
	c.JSON(http.StatusOK, v)
}

func (s *Server) createVM(c *gin.Context) {
	body, ok := readBody(c)
	if !ok {
		return
	}
	req, err := parseVMCreate(body)
	if err != nil {
		apiError(c, http.StatusBadRequest, err.Error())
		return
	}
	v, err := s.cfg.VMs.CreateVM(c.Request.Context(), req)
	if err != nil {
		// What can be missing is an existing volume or a storage group.
		s.vmFailed(c, err, "create VM "+strconv.Quote(req.Name), "a volume or storage group of VM "+strconv.Quote(req.Name)+" not found")
		return
	}
	s.log.Info("webui: VM created", "vm", v.ID, "name", v.Name, "vcpus", v.VCPUs, "memory_bytes", v.MemoryBytes)
	c.Header("Location", "/api/v1/vms/"+strconv.Itoa(v.ID))
	c.JSON(http.StatusCreated, v)
}

func (s *Server) configVM(c *gin.Context) {
	id, ok := vmID(c)
	if !ok {
		return
	}
	body, ok := readBody(c)
	if !ok {
		return
	}
	req, err := parseVMConfig(body)
	if err != nil {
		apiError(c, http.StatusBadRequest, err.Error())
		return
	}
	v, err := s.cfg.VMs.ConfigVM(c.Request.Context(), id, req)
	if err != nil {
		s.vmFailed(c, err, "configure VM "+strconv.Itoa(id), vmNotFound(id))
		return
	}
	s.log.Info("webui: VM configured", "vm", id)
	c.JSON(http.StatusOK, v)
}

func (s *Server) vmAction(c *gin.Context) {
	id, ok := vmID(c)
	if !ok {
		return
	}
	slug := c.Param("action")
	cmd, ok := vmCommand(slug)
	if !ok {
		apiError(c, http.StatusNotFound, "no VM action "+strconv.Quote(slug)+": want start, shutdown, poweroff, dump, boot-from-cd, migrate or reset-device")
		return
	}
	body, ok := readBody(c)
	if !ok {
		return
	}
	args, err := parseVMAction(cmd, body)
	if err != nil {
		apiError(c, http.StatusBadRequest, err.Error())
		return
	}
	v, err := s.cfg.VMs.Command(c.Request.Context(), id, string(cmd), args)
	if err != nil {
		s.vmFailed(c, err, string(cmd)+" VM "+strconv.Itoa(id), vmNotFound(id))
		return
	}
	s.log.Info("webui: VM command", "vm", id, "command", string(cmd), "state", v.State)
	c.JSON(http.StatusOK, v)
}

func (s *Server) removeVM(c *gin.Context) {
	id, ok := vmID(c)
	if !ok {
		return
	}
	deleteData, err := parseDeleteData(c)
	if err != nil {
		apiError(c, http.StatusBadRequest, err.Error())
		return
	}
	if err := s.cfg.VMs.RemoveVM(c.Request.Context(), id, deleteData); err != nil {
		s.vmFailed(c, err, "remove VM "+strconv.Itoa(id), vmNotFound(id))
		return
	}
	s.log.Info("webui: VM removed", "vm", id, "delete_data", deleteData)
	c.Status(http.StatusNoContent)
}

func (s *Server) serialLog(c *gin.Context) {
	id, ok := vmID(c)
	if !ok {
		return
	}
	b, err := s.cfg.VMs.SerialLog(c.Request.Context(), id)
	if err != nil {
		s.vmFailed(c, err, "read the serial log of VM "+strconv.Itoa(id), vmNotFound(id))
		return
	}
	// The guest wrote these bytes: they are shown as text, never sniffed
	// into something a browser would run (securityHeaders sets nosniff).
	c.Data(http.StatusOK, "text/plain; charset=utf-8", b)
}
