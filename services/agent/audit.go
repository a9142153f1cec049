package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/dyad-ha/dyad/services/store"
	"github.com/dyad-ha/dyad/services/unit"
)

const (
	bucketAudit = "audit"
	// auditKeep is how many audit records the unit keeps.
	auditKeep = 1000
	// auditMeta keeps the last sequence number, so numbers are never reused
	// after old records are dropped.
	auditMeta = "meta"
)

// auditLog keeps the operators' audit records in the unit database, so they
// are replicated and survive the loss of either PM.
type auditLog struct{ a *Agent }

func auditKey(seq uint64) string { return fmt.Sprintf("%020d", seq) }

// Append implements webui.AuditLog. Every record is also logged: a PM that
// may not change the unit database (alone without quorum) still leaves a
// trace of what an operator did.
func (l auditLog) Append(ctx context.Context, r unit.AuditRecord) error {
	l.a.log.Info("audit", "user", r.User, "remote", r.Remote, "action", r.Action, "status", r.Status, "result", r.Result)
	return l.appendTo(ctx, l.a.commit, r)
}

// appendTo adds r through commit (Agent.commit, or a local update in tests).
func (l auditLog) appendTo(ctx context.Context, commit func(context.Context, func(store.Writer) error) error, r unit.AuditRecord) error {
	return commit(ctx, func(w store.Writer) error {
		var last uint64
		if b := w.Get(bucketAudit+"-"+auditMeta, "seq"); b != nil {
			last, _ = strconv.ParseUint(string(b), 10, 64)
		}
		r.Seq = last + 1
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		if err := w.Put(bucketAudit, auditKey(r.Seq), b); err != nil {
			return err
		}
		if r.Seq > auditKeep {
			if err := w.Delete(bucketAudit, auditKey(r.Seq-auditKeep)); err != nil {
				return err
			}
		}
		return w.Put(bucketAudit+"-"+auditMeta, "seq", []byte(strconv.FormatUint(r.Seq, 10)))
	})
}

// List implements webui.AuditLog: the newest limit records, newest first.
func (l auditLog) List(ctx context.Context, limit int) ([]unit.AuditRecord, error) {
	var all []unit.AuditRecord
	err := l.a.db.View(func(rd store.Reader) error {
		return rd.ForEach(bucketAudit, func(k string, v []byte) error {
			var r unit.AuditRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("audit record %s: %w", k, err)
			}
			all = append(all, r)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	out := []unit.AuditRecord{}
	for i := len(all) - 1; i >= 0 && len(out) < limit; i-- {
		out = append(out, all[i])
	}
	return out, nil
}
