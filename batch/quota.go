package batch

import (
	"errors"
	"strconv"
	"time"
)

// Quota bounds what one owner (a team, or a key without a team) keeps in a
// FileStore. A file's bytes are reserved as they are written, before they
// reach the store, and its place in the count when it is created, so
// concurrent uploads from many replicas cannot overshoot; deleting or
// expiring a file gives its room back.
type Quota struct {
	// MaxBytes and MaxFiles are files.max_bytes_per_team and
	// files.max_files_per_team.
	MaxBytes int64
	MaxFiles int64
	// Force counts the file without refusing it: batch output and error
	// files belong to the team, but a batch's end never fails for them.
	Force bool
}

// ErrQuotaExceeded is what a QuotaError Is: errors.Is(err,
// ErrQuotaExceeded) without the details.
var ErrQuotaExceeded = errors.New("batch: files quota exceeded")

// QuotaError is an upload refused by a Quota: retrying cannot help until
// the owner deletes files or they expire.
type QuotaError struct {
	// Key is the quota's configuration key.
	Key string
	// Used and Limit are bytes or files, as Key says.
	Used, Limit int64
}

// Error says which quota the upload would pass.
func (e *QuotaError) Error() string {
	unit := "files"
	if e.Key == "files.max_bytes_per_team" {
		unit = "bytes"
	}
	return "The team's files quota is exceeded: " + e.Key + " is " + strconv.FormatInt(e.Limit, 10) + " " + unit +
		" and " + strconv.FormatInt(e.Used, 10) + " are in use. Delete files to make room."
}

// Is makes errors.Is(err, ErrQuotaExceeded) true.
func (e *QuotaError) Is(target error) bool { return target == ErrQuotaExceeded }

func bytesQuotaError(used, limit int64) *QuotaError {
	return &QuotaError{Key: "files.max_bytes_per_team", Used: used, Limit: limit}
}

func filesQuotaError(used, limit int64) *QuotaError {
	return &QuotaError{Key: "files.max_files_per_team", Used: used, Limit: limit}
}

// UnixTime is a time in Unix seconds whose zero is JSON null: OpenAI's file
// object has "expires_at": null for a file that never expires.
type UnixTime int64

// MarshalJSON implements json.Marshaler.
func (t UnixTime) MarshalJSON() ([]byte, error) {
	if t == 0 {
		return []byte("null"), nil
	}
	return strconv.AppendInt(nil, int64(t), 10), nil
}

// UnmarshalJSON implements json.Unmarshaler.
func (t *UnixTime) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*t = 0
		return nil
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return err
	}
	*t = UnixTime(n)
	return nil
}

// expired reports whether a file of expiry t is gone at now.
func (t UnixTime) expired(now time.Time) bool { return t != 0 && now.Unix() >= int64(t) }

// OpenAI's bounds of expires_after.seconds: one hour to 30 days.
const (
	MinExpiresAfter = 3600
	MaxExpiresAfter = 2592000
)

// CheckExpiresAfter validates OpenAI's expires_after (anchor and seconds)
// of a file or of a batch's output files; the errors name anchorParam or
// secondsParam. It returns the seconds.
func CheckExpiresAfter(anchor, seconds, anchorParam, secondsParam string) (int64, *ParamError) {
	if anchor != "created_at" {
		return 0, &ParamError{Status: 400, Param: anchorParam, Message: "'" + anchorParam + "' must be created_at."}
	}
	n, err := strconv.ParseInt(seconds, 10, 64)
	if err != nil || n < MinExpiresAfter || n > MaxExpiresAfter {
		return 0, &ParamError{Status: 400, Param: secondsParam,
			Message: "'" + secondsParam + "' must be an integer from 3600 (one hour) to 2592000 (30 days)."}
	}
	return n, nil
}
