package batch

import (
	"context"
	"encoding/json"
	"time"

	"go.uber.org/zap"
)

// finalizeLock bounds how long a replica that died while finalizing keeps
// others from doing it.
const finalizeLock = 10 * time.Minute

// finalizeAsync finalizes batch id in the background, once at a time per
// replica (and per batch across replicas, through the store's lock).
func (m *Manager) finalizeAsync(id string) {
	m.mu.Lock()
	if m.finalizing == nil {
		m.finalizing = map[string]bool{}
	}
	if m.finalizing[id] {
		m.mu.Unlock()
		return
	}
	m.finalizing[id] = true
	m.finishes.Add(1)
	m.mu.Unlock()
	go func() {
		defer m.finishes.Done()
		m.finalize(id)
		m.mu.Lock()
		delete(m.finalizing, id)
		m.mu.Unlock()
	}()
}

// finalize writes the output and error files of a batch whose lines all
// have an outcome and moves it to its final status: completed, or cancelled
// or expired when it ended early. The files' ids are fixed per batch, so a
// replica that finalizes again after another died half-way rewrites the
// same files.
func (m *Manager) finalize(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), finalizeLock)
	defer cancel()
	holder := m.o.Consumer
	ok, err := m.outcomes.Lock(ctx, id, holder, finalizeLock)
	if err != nil || !ok {
		return
	}
	defer m.outcomes.Unlock(context.Background(), id, holder)
	b, err := m.ledger.Get(ctx, id)
	if err != nil || Final(b.Status) || b.Status == StatusValidating || !b.Counts.Done() {
		return
	}
	now := time.Now()
	if b.Ending == "" && b.Status != StatusFinalizing {
		if b, err = m.ledger.Update(ctx, id, func(x *Batch) bool {
			if x.Status != StatusInProgress {
				return false
			}
			x.Status, x.FinalizingAt = StatusFinalizing, now.Unix()
			return true
		}); err != nil {
			m.log.Error("batch: finalizing", zap.String("batch", id), zap.Error(err))
			return
		}
	}
	out, errs, err := m.writeFiles(ctx, b, now)
	if err != nil {
		m.log.Error("batch: writing the output files; another try follows", zap.String("batch", id), zap.Error(err))
		return
	}
	b, err = m.ledger.Update(ctx, id, func(x *Batch) bool {
		if Final(x.Status) {
			return false
		}
		x.OutputFileID, x.ErrorFileID = out, errs
		t := time.Now().Unix()
		switch x.Ending {
		case endCancel:
			x.Status, x.CancelledAt = StatusCancelled, t
		case endExpire:
			x.Status, x.ExpiredAt = StatusExpired, t
		default:
			x.Status, x.CompletedAt = StatusCompleted, t
		}
		return true
	})
	if err != nil {
		m.log.Error("batch: finalizing", zap.String("batch", id), zap.Error(err))
		return
	}
	if err := m.outcomes.Drop(ctx, id); err != nil {
		m.log.Warn("batch: dropping the queue of a finished batch", zap.String("batch", id), zap.Error(err))
	}
	m.mu.Lock()
	delete(m.info, id)
	m.mu.Unlock()
	m.log.Info("batch finished", zap.String("batch", id), zap.String("status", b.Status), zap.String("key", b.Key),
		zap.String("team", b.Team), zap.Int64("total", b.Counts.Total), zap.Int64("completed", b.Counts.Completed),
		zap.Int64("failed", b.Counts.Failed), zap.Int64("skipped", b.Counts.Skipped))
	m.notify(m.rt(), b)
}

// writeFiles writes the output file (completed lines) and the error file
// (failed lines) of b; an id is "" when its file would be empty.
func (m *Manager) writeFiles(ctx context.Context, b *Batch, now time.Time) (out, errs string, err error) {
	fc := m.filesConfig()
	ttl := fc.DefaultTTL
	if b.OutputExpiresAfter > 0 {
		ttl = time.Duration(b.OutputExpiresAfter) * time.Second
	}
	// Counted, never refused: the lines ran and were paid for.
	q := QuotaFor(fc)
	q.Force = true
	mk := func(id, name string) (FileWriter, error) {
		return m.files.Create(ctx, File{ID: id, Owner: b.Owner, CreatedAt: now.Unix(), Filename: name,
			Purpose: PurposeBatchOutput, ExpiresAt: UnixTime(now.Add(ttl).Unix())}, 1<<50, q)
	}
	ow, err := mk(outputFileID(b.ID), b.ID+"_output.jsonl")
	if err != nil {
		return "", "", err
	}
	defer ow.Abort()
	ew, err := mk(errorFileID(b.ID), b.ID+"_error.jsonl")
	if err != nil {
		return "", "", err
	}
	defer ew.Abort()
	var nOut, nErr int
	nl := []byte{'\n'}
	err = m.outcomes.Results(ctx, b.ID, func(kind Outcome, line []byte) error {
		var w FileWriter
		switch kind {
		case Completed:
			w, nOut = ow, nOut+1
		case Failed:
			w, nErr = ew, nErr+1
		default:
			return nil
		}
		if _, err := w.Write(line); err != nil {
			return err
		}
		_, err := w.Write(nl)
		return err
	})
	if err != nil {
		return "", "", err
	}
	if nOut > 0 {
		f, err := ow.Commit()
		if err != nil {
			return "", "", err
		}
		out = f.ID
	}
	if nErr > 0 {
		f, err := ew.Commit()
		if err != nil {
			return "", "", err
		}
		errs = f.ID
	}
	return out, errs, nil
}

// notify calls the webhook of the batch's key, if it has one.
func (m *Manager) notify(rt Runtime, b *Batch) {
	if m.o.Webhooks == nil || rt.Config == nil {
		return
	}
	k, ok := m.key(rt.Config, b.Key)
	if !ok || k.caller.WebhookURL == "" {
		return
	}
	body, err := json.Marshal(b)
	if err != nil {
		return
	}
	m.o.Webhooks.Send(k.caller.WebhookURL, []byte(k.secret), "batch."+b.Status, b.ID, body)
}
