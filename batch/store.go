package batch

import (
	"context"
	"time"
)

// Span locates one request line in a batch's input file.
type Span struct {
	Off int64
	Len int
}

// Task is one line of a batch, taken from the queue by a replica.
type Task struct {
	Batch string
	// Line is the request's index among the batch's lines, from 0.
	Line int
	Span Span
	// ref is the queue's handle of the line (a stream entry id in Redis).
	ref string
	// try counts the attempts this replica made (5xx retries).
	try int
}

// Outcome is how a line ended, as Store.Done records it. Its value is the
// byte stored with the line's result.
type Outcome byte

// Outcomes of a line.
const (
	Completed Outcome = 'c' // in the output file
	Failed    Outcome = 'f' // in the error file
	Skipped   Outcome = 's' // never ran (cancelled): in neither
)

// Store keeps batches, the queue of their lines and the lines' results:
// the three roles below, which the Manager uses apart (the API and the
// sweeper the Ledger, workers the Queue, finalization the Outcomes). Two
// implementations share one test suite: Redis, shared by the replicas, and
// Local, embedded for one replica.
type Store interface {
	Ledger
	Queue
	Outcomes
	Close() error
}

// Ledger keeps the batches themselves.
type Ledger interface {
	// queued the batch shows as validating, then with b.Status: a batch
	// whose creation was cut short stays validating (the Manager fails it).
	// The batch is active from here on (see Active).
	Create(ctx context.Context, b *Batch, lines []Span) error
	// Get returns a batch with its current counts, or ErrNotFound.
	Get(ctx context.Context, id string) (*Batch, error)
	// List returns the batches of owner ("" for every owner), newest first,
	// created before the batch after (exclusive, "" from the newest), at
	// most limit, and whether more follow.
	List(ctx context.Context, owner, after string, limit int) ([]*Batch, bool, error)
	// Update applies fn to the batch and saves what it changed, atomically
	// with respect to other Updates; fn returns false to change nothing.
	// Counts are the Store's: what fn does to them is not saved.
	Update(ctx context.Context, id string, fn func(b *Batch) bool) (*Batch, error)
	// Active lists the batches that are not final.
	Active(ctx context.Context) ([]string, error)
	// SweepFinished removes the final batches that ended before before
	// (batch.retention), state and all, and returns how many this call
	// removed; removing one twice is harmless.
	SweepFinished(ctx context.Context, before time.Time) (int, error)
}

// Queue hands a batch's lines to the workers of every replica and takes
// their outcomes.
type Queue interface {
	// Take hands at most n lines of batch id that no replica took yet to
	// consumer.
	Take(ctx context.Context, id, consumer string, n int) ([]Task, error)
	// Reclaim hands consumer at most n lines of batch id that another
	// consumer took and has not touched for idle (a replica that died).
	// Stores of one replica have nothing to reclaim.
	Reclaim(ctx context.Context, id, consumer string, idle time.Duration, n int) ([]Task, error)
	// Touch tells the Store that consumer still holds tasks (a heartbeat:
	// they are not reclaimed while it comes every idle).
	Touch(ctx context.Context, consumer string, tasks []Task) error
	// HasResult reports whether the task's line has an outcome already.
	HasResult(ctx context.Context, t Task) (bool, error)
	// Done records the outcome of a task's line (kind, and for completed
	// and failed lines the output or error file line) unless the line has
	// one already, acknowledges the task, and returns the batch's counts.
	Done(ctx context.Context, t Task, kind Outcome, line []byte) (Counts, error)
	// Ack acknowledges a task whose line has an outcome already.
	Ack(ctx context.Context, t Task) error
}

// Outcomes are the recorded results of a batch's lines, read once to
// write its files, under a lock only one replica holds.
type Outcomes interface {
	// Results calls fn with every recorded outcome of batch id, in no
	// particular order.
	Results(ctx context.Context, id string, fn func(kind Outcome, line []byte) error) error
	// Drop removes the queue and results of a batch that has its files; the
	// batch stops being active.
	Drop(ctx context.Context, id string) error
	// Lock takes, or extends, the lock of a batch's finalization for
	// holder, for ttl; false when another holder has it.
	Lock(ctx context.Context, id, holder string, ttl time.Duration) (bool, error)
	// Unlock releases a lock holder took.
	Unlock(ctx context.Context, id, holder string) error
}
