package webui

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/dyad-ha/dyad/services/unit"
	"github.com/gin-gonic/gin"
)

// Context keys of the audit: the user a login or logout was for, which is
// not the authenticated user of userKey, and a result the handler states
// itself (a form post answers with a redirect, not a JSON error).
const (
	auditUserKey   = "dyad.audit.user"
	auditResultKey = "dyad.audit.result"
)

// Bounds of an audit record's text fields: the record is shown in tables.
const (
	maxAuditResult = 300
	maxAuditAction = 300
)

// maxAuditCapture bounds how much of an error answer the audit keeps to
// find its message; a longer answer is recorded by its status text.
const maxAuditCapture = 16 << 10

// auditTimeout bounds an Append: a stuck audit log must not hold the
// answer, which is already written, for long.
const auditTimeout = 5 * time.Second

// changes reports whether method changes something; reads are not
// audited.
func changes(method string) bool {
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}

// auditWriter keeps the start of an error answer, for its message.
type auditWriter struct {
	gin.ResponseWriter
	body []byte
}

func (w *auditWriter) keep(p []byte) {
	if s := w.Status(); s >= 200 && s <= 299 {
		return
	}
	if room := maxAuditCapture - len(w.body); room > 0 {
		w.body = append(w.body, p[:min(room, len(p))]...)
	}
}

func (w *auditWriter) Write(p []byte) (int, error) {
	w.keep(p)
	return w.ResponseWriter.Write(p)
}

func (w *auditWriter) WriteString(s string) (int, error) {
	w.keep([]byte(s))
	return w.ResponseWriter.WriteString(s)
}

// audit records a request that changes something in the AuditLog once its
// handler has run: who, from where, what, and how it ended. It runs after
// authentication, so only requests of a known user (and the logins and
// logouts, which name the user they are for) are recorded. A failure to
// record is logged and never fails the request: the operation has
// happened by then.
func (s *Server) audit(c *gin.Context) {
	if s.cfg.Audit == nil || !changes(c.Request.Method) {
		return
	}
	start := s.now()
	w := &auditWriter{ResponseWriter: c.Writer}
	c.Writer = w
	defer func() {
		// A handler that panicked is recorded as the 500 the recovery
		// answers, then the panic goes on to that recovery.
		if p := recover(); p != nil {
			s.appendAudit(c, start, http.StatusInternalServerError, "internal error")
			panic(p)
		}
	}()
	c.Next()
	status := w.Status()
	result := c.GetString(auditResultKey)
	if result == "" {
		result = auditResult(status, w.body)
	}
	s.appendAudit(c, start, status, result)
}

func (s *Server) appendAudit(c *gin.Context, start time.Time, status int, result string) {
	user := c.GetString(userKey)
	if user == "" {
		user = c.GetString(auditUserKey)
	}
	rec := unit.AuditRecord{
		Time: start.UTC(),
		User: auditText(user, maxCredentialLen),
		// The address of the connection, not X-Forwarded-For: a client
		// can write that header, and the API is served without a proxy.
		Remote: c.RemoteIP(),
		// The escaped path: what the client sent, without the control
		// characters a decoded one may hold.
		Action: auditText(c.Request.Method+" "+c.Request.URL.EscapedPath(), maxAuditAction),
		Status: status,
		Result: auditText(result, maxAuditResult),
	}
	// The request's context ends with the client's connection; the record
	// of what the request did must still be written.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request.Context()), auditTimeout)
	defer cancel()
	if err := s.cfg.Audit.Append(ctx, rec); err != nil {
		s.log.Error("webui: cannot append to the audit log", "action", rec.Action, "user", rec.User, "status", status, "err", err)
	}
}

// auditResult says how a request ended: "ok" for a success or a redirect,
// else the "error" of the API's answer, else the status text.
func auditResult(status int, body []byte) string {
	if okStatus(status) {
		return "ok"
	}
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return e.Error
	}
	if t := http.StatusText(status); t != "" {
		return t
	}
	return "status " + strconv.Itoa(status)
}

// auditText makes s fit a table cell: control characters become spaces
// (a record must not forge a line of its own in dyadctl's table), invalid
// UTF-8 the replacement character, and past max characters it is cut with
// an ellipsis.
func auditText(s string, max int) string {
	// Past max+1 characters the rest is cut off anyway; a cut through a
	// character leaves one replacement character, in the part cut off.
	if n := utf8.UTFMax * (max + 1); len(s) > n {
		s = s[:n]
	}
	rs := []rune(s)
	if len(rs) > max {
		rs = append(rs[:max-1], '…')
	}
	for i, r := range rs {
		if unicode.IsControl(r) {
			rs[i] = ' '
		}
	}
	return string(rs)
}
