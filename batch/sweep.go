package batch

import (
	"context"
	"time"

	"go.uber.org/zap"

	"nanogate/config"
)

// QuotaFor is the quota of uploads under the files block in force.
func QuotaFor(f config.Files) Quota {
	return Quota{MaxBytes: f.MaxBytesPerTeam, MaxFiles: f.MaxFilesPerTeam}
}

// filesConfig is the files block in force (its defaults before Start).
func (m *Manager) filesConfig() config.Files {
	if rt := m.runtime(); rt.Config != nil {
		return rt.Config.Files
	}
	return config.Files{MaxBytesPerTeam: config.DefaultFilesMaxBytesPerTeam,
		MaxFilesPerTeam: config.DefaultFilesMaxFilesPerTeam, DefaultTTL: config.DefaultFilesTTL}
}

// retention is batch.retention in force.
func (m *Manager) retention() time.Duration {
	if rt := m.runtime(); rt.Config != nil && rt.Config.Batch.Retention > 0 {
		return rt.Config.Batch.Retention
	}
	return config.DefaultBatchRetention
}

func (m *Manager) runtime() Runtime {
	m.mu.Lock()
	rt := m.rt
	m.mu.Unlock()
	if rt == nil {
		return Runtime{}
	}
	return rt()
}

// sweeper removes expired files and finished batches past their retention,
// every SweepEvery, on every replica: the stores make a removal happen once
// however many replicas sweep.
func (m *Manager) sweeper() {
	defer m.wg.Done()
	t := time.NewTicker(m.o.SweepEvery)
	defer t.Stop()
	for {
		m.Sweep(m.runCtx)
		select {
		case <-m.runCtx.Done():
			return
		case <-t.C:
		}
	}
}

// Sweep removes, once, the files whose expiry passed (giving their room
// back to their team) and the batches that ended more than batch.retention
// ago.
func (m *Manager) Sweep(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, max(m.o.SweepEvery, time.Minute))
	defer cancel()
	if n, err := m.files.Sweep(ctx); err != nil {
		m.storeError("removing expired files", err)
	} else if n > 0 {
		m.log.Info("expired files removed", zap.Int("files", n))
	}
	n, err := m.ledger.SweepFinished(ctx, time.Now().Add(-m.retention()))
	if err != nil {
		m.storeError("removing finished batches", err)
	} else if n > 0 {
		m.log.Info("finished batches removed", zap.Int("batches", n))
	}
}
