// Package batch runs OpenAI's Batches API on the gateway: a client uploads a
// JSONL file of requests (Files API), creates a batch over it, polls it and
// downloads the output file. Every line goes through the same journey as a
// live request (package gateway: limits, budget, routing with failover,
// accounting), paced inside its key's and team's limits: a batch waits for
// room instead of getting 429s, and takes at most batch.max_share of each
// limit, so interactive traffic keeps the rest.
//
// The parts, each behind a small interface:
//
//   - FileStore keeps uploaded input files and the output and error files
//     of finished batches: RedisFiles when redis is configured (every
//     replica reads every file), FS (a directory) otherwise.
//   - Store keeps batches, the queue of their lines and the lines' results:
//     Redis (a hash per batch, a stream with a consumer group for its lines,
//     a hash of results, all hash-tagged by batch) when redis is configured,
//     Local otherwise (a JSON file per batch, an append-only results file
//     that is also the queue's acknowledgement log).
//   - Manager runs batch.workers lines at a time on every replica, takes
//     over the lines of a replica that died after batch.reclaim_after,
//     finalizes batches into their output files and calls their webhook.
//
// A line's result is stored once (by batch and line) before its queue entry
// is acknowledged, and a line whose result exists is never run again. Usage
// records of a line carry ids derived from the batch, the line and the
// attempt, and are flushed before the result is stored, so a line run again
// after a crash is billed at most once.
//
// The package imports the journey (gateway) and never the HTTP server: the
// handlers of package proxy call the Manager.
package batch

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"encoding/json"
	"errors"
	"regexp"
	"strconv"
	"time"
)

// Batch statuses, as OpenAI names them.
const (
	StatusValidating = "validating"
	StatusFailed     = "failed"
	StatusInProgress = "in_progress"
	StatusFinalizing = "finalizing"
	StatusCompleted  = "completed"
	StatusExpired    = "expired"
	StatusCancelling = "cancelling"
	StatusCancelled  = "cancelled"
)

// Endpoints a batch may run.
const (
	EndpointChat   = "/v1/chat/completions"
	EndpointImages = "/v1/images/generations"
)

// Ways a batch ends before all its lines ran (Batch.Ending).
const (
	endCancel = "cancel"
	endExpire = "expire"
)

// Errors callers branch on.
var (
	// ErrNotFound: no such batch or file (or another team's).
	ErrNotFound = errors.New("batch: not found")
	// ErrNotCancellable: the batch already ended.
	ErrNotCancellable = errors.New("batch: the batch already ended")
	// ErrFileTooLarge: an upload over the size cap.
	ErrFileTooLarge = errors.New("batch: file too large")
)

// Final reports whether status is one a batch never leaves.
func Final(status string) bool {
	switch status {
	case StatusFailed, StatusCompleted, StatusExpired, StatusCancelled:
		return true
	}
	return false
}

// Batch is one batch: what OpenAI's batch object shows, and whose it is.
type Batch struct {
	ID string `json:"id"`
	// Owner is the team ("t:<team>") or, for a key without a team, the key
	// ("k:<key>"): only callers of the same owner see the batch.
	Owner string `json:"owner"`
	// Team and Key (names, never secrets) created the batch; its lines run
	// as that key, looked up by name in the config in force.
	Team             string            `json:"team"`
	Key              string            `json:"key"`
	Endpoint         string            `json:"endpoint"`
	InputFileID      string            `json:"input_file_id"`
	CompletionWindow string            `json:"completion_window"`
	Metadata         map[string]string `json:"metadata,omitempty"`
	// Model is the model of the batch's first line.
	Model  string `json:"model,omitempty"`
	Status string `json:"status"`
	// Ending is set when the batch stops taking lines before they all ran:
	// "cancel" or "expire".
	Ending       string      `json:"ending,omitempty"`
	Errors       []LineError `json:"errors,omitempty"`
	OutputFileID string      `json:"output_file_id,omitempty"`
	ErrorFileID  string      `json:"error_file_id,omitempty"`
	CreatedAt    int64       `json:"created_at"`
	InProgressAt int64       `json:"in_progress_at,omitempty"`
	ExpiresAt    int64       `json:"expires_at"`
	FinalizingAt int64       `json:"finalizing_at,omitempty"`
	CompletedAt  int64       `json:"completed_at,omitempty"`
	FailedAt     int64       `json:"failed_at,omitempty"`
	ExpiredAt    int64       `json:"expired_at,omitempty"`
	CancellingAt int64       `json:"cancelling_at,omitempty"`
	CancelledAt  int64       `json:"cancelled_at,omitempty"`
	// OutputExpiresAfter is the client's expiry of the output and error
	// files, in seconds after they are written (0: files.default_ttl).
	OutputExpiresAfter int64 `json:"output_expires_after,omitempty"`
	// Counts are kept by the Store as lines finish; a Batch read from a
	// Store carries the current ones.
	Counts Counts `json:"counts"`
}

// endedAt is when a final batch reached its status (0 when it did not).
func endedAt(b *Batch) int64 { return max(b.CompletedAt, b.FailedAt, b.ExpiredAt, b.CancelledAt) }

// Counts are a batch's lines by outcome.
type Counts struct {
	Total     int64 `json:"total"`
	Completed int64 `json:"completed"`
	Failed    int64 `json:"failed"`
	// Skipped lines never ran (the batch was cancelled): in neither file.
	Skipped int64 `json:"skipped"`
}

// Done reports whether every line has an outcome.
func (c Counts) Done() bool { return c.Completed+c.Failed+c.Skipped >= c.Total }

// Left is the number of lines without an outcome.
func (c Counts) Left() int64 { return max(c.Total-c.Completed-c.Failed-c.Skipped, 0) }

// LineError is one problem of an input file, in OpenAI's batch errors list.
type LineError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Param   string `json:"param,omitempty"`
	// Line is 1-based; 0 when the error is not about one line.
	Line int `json:"line,omitempty"`
}

// OwnerOf returns the owner of what a key creates: its team, or the key
// itself when it has none.
func OwnerOf(team, key string) string {
	if team != "" {
		return "t:" + team
	}
	return "k:" + key
}

// apiBatch is OpenAI's batch object.
type apiBatch struct {
	ID               string            `json:"id"`
	Object           string            `json:"object"`
	Endpoint         string            `json:"endpoint"`
	Model            string            `json:"model,omitempty"`
	Errors           *apiErrors        `json:"errors"`
	InputFileID      string            `json:"input_file_id"`
	CompletionWindow string            `json:"completion_window"`
	Status           string            `json:"status"`
	OutputFileID     *string           `json:"output_file_id"`
	ErrorFileID      *string           `json:"error_file_id"`
	CreatedAt        int64             `json:"created_at"`
	InProgressAt     *int64            `json:"in_progress_at"`
	ExpiresAt        *int64            `json:"expires_at"`
	FinalizingAt     *int64            `json:"finalizing_at"`
	CompletedAt      *int64            `json:"completed_at"`
	FailedAt         *int64            `json:"failed_at"`
	ExpiredAt        *int64            `json:"expired_at"`
	CancellingAt     *int64            `json:"cancelling_at"`
	CancelledAt      *int64            `json:"cancelled_at"`
	RequestCounts    apiCounts         `json:"request_counts"`
	Metadata         map[string]string `json:"metadata"`
}

type apiErrors struct {
	Object string       `json:"object"`
	Data   []apiLineErr `json:"data"`
}

type apiLineErr struct {
	Code    string  `json:"code"`
	Message string  `json:"message"`
	Param   *string `json:"param"`
	Line    *int    `json:"line"`
}

type apiCounts struct {
	Total     int64 `json:"total"`
	Completed int64 `json:"completed"`
	Failed    int64 `json:"failed"`
}

func optInt(v int64) *int64 {
	if v == 0 {
		return nil
	}
	return &v
}

func optStr(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// MarshalJSON writes OpenAI's batch object (what the SDKs parse): absent
// times and files are null, request_counts leave skipped lines out.
func (b *Batch) MarshalJSON() ([]byte, error) {
	a := apiBatch{
		ID: b.ID, Object: "batch", Endpoint: b.Endpoint, Model: b.Model, InputFileID: b.InputFileID,
		CompletionWindow: b.CompletionWindow, Status: b.Status,
		OutputFileID: optStr(b.OutputFileID), ErrorFileID: optStr(b.ErrorFileID),
		CreatedAt: b.CreatedAt, InProgressAt: optInt(b.InProgressAt), ExpiresAt: optInt(b.ExpiresAt),
		FinalizingAt: optInt(b.FinalizingAt), CompletedAt: optInt(b.CompletedAt), FailedAt: optInt(b.FailedAt),
		ExpiredAt: optInt(b.ExpiredAt), CancellingAt: optInt(b.CancellingAt), CancelledAt: optInt(b.CancelledAt),
		RequestCounts: apiCounts{Total: b.Counts.Total, Completed: b.Counts.Completed, Failed: b.Counts.Failed},
		Metadata:      b.Metadata,
	}
	if len(b.Errors) > 0 {
		a.Errors = &apiErrors{Object: "list", Data: make([]apiLineErr, len(b.Errors))}
		for i, e := range b.Errors {
			d := apiLineErr{Code: e.Code, Message: e.Message, Param: optStr(e.Param)}
			if e.Line > 0 {
				line := e.Line
				d.Line = &line
			}
			a.Errors.Data[i] = d
		}
	}
	return json.Marshal(&a)
}

// state is a Batch as the stores keep it (every field, none renamed).
type state Batch

func encodeState(b *Batch) []byte {
	out, err := json.Marshal((*state)(b))
	if err != nil {
		panic(err) // plain strings and numbers: cannot fail
	}
	return out
}

func decodeState(data []byte) (*Batch, error) {
	var s state
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, err
	}
	return (*Batch)(&s), nil
}

// ids are a time prefix (ms) and 80 random bits in lower-case base32hex:
// unique across replicas, and their lexical order is their creation order,
// which lists page through.
var idEncoding = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

func newID(now time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixMilli())<<16)
	rand.Read(b[6:])
	return idEncoding.EncodeToString(b[:])
}

var (
	batchIDRe = regexp.MustCompile(`^batch_[0-9a-v]{26}$`)
	fileIDRe  = regexp.MustCompile(`^file-[0-9a-v]{26}(-out|-err)?$`)
)

// ValidBatchID reports whether id can be a batch id (checked before any
// lookup, so ids never reach a path or a key unchecked).
func ValidBatchID(id string) bool { return batchIDRe.MatchString(id) }

// ValidFileID reports whether id can be a file id.
func ValidFileID(id string) bool { return fileIDRe.MatchString(id) }

// NewBatchID returns a new batch id.
func NewBatchID(now time.Time) string { return "batch_" + newID(now) }

// NewFileID returns a new file id.
func NewFileID(now time.Time) string { return "file-" + newID(now) }

// outputFileID and errorFileID are fixed per batch, so that finalizing
// twice (after a crash) rewrites the same files.
func outputFileID(batchID string) string { return "file-" + batchID[len("batch_"):] + "-out" }
func errorFileID(batchID string) string  { return "file-" + batchID[len("batch_"):] + "-err" }

// suffix is the random part of a batch id, for ids derived from it.
func suffix(batchID string) string { return batchID[len("batch_"):] }

// callID is the id of attempt try of line (0-based) of a batch: its usage
// records carry it, and the accounting store counts an id once, so running
// the line again after a crash does not bill it twice.
func callID(batchID string, line, try int) string {
	return "b" + suffix(batchID) + "-" + strconv.Itoa(line) + "-" + strconv.Itoa(try)
}
