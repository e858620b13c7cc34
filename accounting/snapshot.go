package accounting

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strconv"
)

// A snapshot is the head of a compacted usage file, before any record, in
// JSON lines too (one object per line, which jq reads):
//
//	{"snapshot":{"buckets":12,"ids":930760}}
//	{"bucket":{"team":"design","period":"2026-11","totals":[...],"keys":{"design-ci":[...]},...}}
//	{"ids":{"team":"design","day":20417,"ids":["req_5f0c2a9e41d71","req_5f0c2a9e41d72",...]}}
//
// Totals are arrays in the order of metricNames. An ids line holds up to
// idsPerLine ids of one team whose records are of one day (days since
// 1970-01-01, UTC), so that they are forgotten together. Ids lines are
// written and read by hand: a million ids through reflection took seconds.
const idsPerLine = 1000

// snapLine is one line of a snapshot: exactly one of its fields is set.
type snapLine struct {
	Head   *snapHead   `json:"snapshot,omitempty"`
	Bucket *snapBucket `json:"bucket,omitempty"`
	IDs    *snapIDs    `json:"ids,omitempty"`
}

// snapHead opens a snapshot with its counts, to size the maps that load it.
type snapHead struct {
	Buckets int `json:"buckets"`
	IDs     int `json:"ids"`
}

// snapTotals are Totals in the order of metricNames.
type snapTotals [numMetrics]int64

type snapBucket struct {
	Team      string                `json:"team"`
	Period    string                `json:"period"`
	Totals    snapTotals            `json:"totals"`
	Keys      map[string]snapTotals `json:"keys,omitempty"`
	Models    map[string]snapTotals `json:"models,omitempty"`
	Providers map[string]snapTotals `json:"providers,omitempty"`
	Sizes     map[string]snapTotals `json:"sizes,omitempty"`
}

// snapIDs are remembered ids of one team whose records are of one day.
type snapIDs struct {
	Team string   `json:"team"`
	Day  int64    `json:"day"`
	IDs  []string `json:"ids"`
}

// Snapshot lines start with these; a record's line starts with {"id":.
var (
	headPrefix   = []byte(`{"snapshot":`)
	bucketPrefix = []byte(`{"bucket":`)
	idsPrefix    = []byte(`{"ids":`)
)

func isSnapshotLine(b []byte) bool {
	return bytes.HasPrefix(b, idsPrefix) || bytes.HasPrefix(b, bucketPrefix) || bytes.HasPrefix(b, headPrefix)
}

func toSnap(t *Totals) snapTotals {
	var s snapTotals
	for i := range numMetrics {
		s[i] = *t.ptr(i)
	}
	return s
}

func (s *snapTotals) totals() Totals {
	var t Totals
	for i := range numMetrics {
		*t.ptr(i) = s[i]
	}
	return t
}

func snapOf(team, period string, b *Bucket) snapBucket {
	s := snapBucket{Team: team, Period: period, Totals: toSnap(&b.Team)}
	for _, pair := range []struct {
		dst *map[string]snapTotals
		src map[string]*Totals
	}{{&s.Keys, b.Keys}, {&s.Models, b.Models}, {&s.Providers, b.Providers}, {&s.Sizes, b.Sizes}} {
		if len(pair.src) == 0 {
			continue
		}
		*pair.dst = make(map[string]snapTotals, len(pair.src))
		for name, t := range pair.src {
			(*pair.dst)[name] = toSnap(t)
		}
	}
	return s
}

// teamDay names the ids of one team's records of one day.
type teamDay struct {
	team string
	day  int64
}

// idGroups groups the ids of order by team and day, the days in order, so
// that a restart loads the oldest first, as they came (within a day, team
// after team), and forgets them first.
func idGroups(order []remembered) []snapIDs {
	at := map[teamDay]int{}
	var gs []snapIDs
	for _, r := range order {
		k := teamDay{r.team, r.day}
		i, ok := at[k]
		if !ok {
			i = len(gs)
			at[k] = i
			gs = append(gs, snapIDs{Team: r.team, Day: r.day})
		}
		gs[i].IDs = append(gs[i].IDs, r.id)
	}
	slices.SortStableFunc(gs, func(a, b snapIDs) int {
		return cmp.Or(cmp.Compare(a.Day, b.Day), cmp.Compare(a.Team, b.Team))
	})
	return gs
}

// frozen is the store's state at one offset of its file.
type frozen struct {
	buckets []snapBucket
	order   []remembered // the remembered ids, in the order they came
	nids    int
	offset  int64 // the file's size when the state was taken
}

// writeSnapshot writes fz as snapshot lines to w and returns their bytes.
func writeSnapshot(w io.Writer, fz *frozen) (int64, error) {
	cw := &countingWriter{w: w}
	bw := bufio.NewWriterSize(cw, 1<<20)
	enc := json.NewEncoder(bw) // one value per line
	if err := enc.Encode(snapLine{Head: &snapHead{Buckets: len(fz.buckets), IDs: fz.nids}}); err != nil {
		return 0, err
	}
	slices.SortFunc(fz.buckets, func(a, b snapBucket) int {
		return cmp.Or(cmp.Compare(a.Team, b.Team), cmp.Compare(a.Period, b.Period))
	})
	for i := range fz.buckets {
		if err := enc.Encode(snapLine{Bucket: &fz.buckets[i]}); err != nil {
			return 0, err
		}
	}
	var line []byte
	for _, g := range idGroups(fz.order) {
		for ids := range slices.Chunk(g.IDs, idsPerLine) {
			line = appendIDsLine(line[:0], g.Team, g.Day, ids)
			if _, err := bw.Write(line); err != nil {
				return 0, err
			}
		}
	}
	if err := bw.Flush(); err != nil {
		return 0, err
	}
	return cw.n, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// appendIDsLine appends an ids line, as encoding/json would write it (less
// its HTML escapes, which JSON does not need).
func appendIDsLine(b []byte, team string, day int64, ids []string) []byte {
	b = append(b, `{"ids":{"team":`...)
	b = appendJSONString(b, team)
	b = append(b, `,"day":`...)
	b = strconv.AppendInt(b, day, 10)
	b = append(b, `,"ids":[`...)
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, id)
	}
	return append(b, "]}}\n"...)
}

// appendJSONString quotes s, by hand when nothing in it needs an escape.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return appendString(b, s)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// parseIDsLine reads an ids line as appendIDsLine writes it when no string
// in it has an escape; ok is false for any other line, which encoding/json
// reads instead. The ids are substrings of one string per line: the ids of
// a line share a day, so they are forgotten together.
func parseIDsLine(line []byte) (ids snapIDs, ok bool) {
	if bytes.IndexByte(line, '\\') >= 0 {
		return ids, false
	}
	s := string(bytes.TrimRight(line, "\r\n"))
	rest, ok := cutPrefix(s, `{"ids":{"team":`)
	if ids.Team, rest, ok = cutQuoted(rest, ok); !ok {
		return ids, false
	}
	rest, ok = cutPrefix(rest, `,"day":`)
	end := 0
	for ok && end < len(rest) && (rest[end] == '-' || '0' <= rest[end] && rest[end] <= '9') {
		end++
	}
	day, err := strconv.ParseInt(rest[:end], 10, 64)
	if rest, ok = cutPrefix(rest[end:], `,"ids":[`); !ok || err != nil {
		return ids, false
	}
	ids.Day = day
	for len(rest) > 0 && rest[0] != ']' {
		var id string
		if id, rest, ok = cutQuoted(rest, true); !ok {
			return ids, false
		}
		ids.IDs = append(ids.IDs, id)
		if len(rest) > 0 && rest[0] == ',' {
			rest = rest[1:]
		}
	}
	return ids, rest == "]}}"
}

func cutPrefix(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || s[:len(prefix)] != prefix {
		return s, false
	}
	return s[len(prefix):], true
}

// cutQuoted cuts a string without escapes off the front of s.
func cutQuoted(s string, ok bool) (string, string, bool) {
	if !ok || len(s) < 2 || s[0] != '"' {
		return "", s, false
	}
	for i := 1; i < len(s); i++ {
		if s[i] == '"' {
			return s[1:i], s[i+1:], true
		}
	}
	return "", s, false
}

// loadSnapshotLine adds a snapshot line to the state; ids of a day before
// oldestDay are past the window and forgotten.
func (m *Memory) loadSnapshotLine(b []byte, oldestDay int64) error {
	if bytes.HasPrefix(b, idsPrefix) {
		if ids, ok := parseIDsLine(b); ok {
			m.loadIDs(&ids, oldestDay)
			return nil
		}
	}
	var l snapLine
	if err := json.Unmarshal(b, &l); err != nil {
		return err
	}
	switch {
	case l.Head != nil:
		if len(m.ids) == 0 {
			m.ids = make(map[idKey]int64, min(max(l.Head.IDs, 0), m.o.MaxIDs))
		}
	case l.Bucket != nil && l.Bucket.Period != "":
		m.loadBucket(l.Bucket)
	case l.IDs != nil:
		m.loadIDs(l.IDs, oldestDay)
	default:
		return errors.New("a snapshot line without a head, a bucket or ids")
	}
	return nil
}

func (m *Memory) loadIDs(s *snapIDs, oldestDay int64) {
	if s.Day < oldestDay {
		return
	}
	for _, id := range s.IDs {
		k := idKey{s.Team, id}
		if _, dup := m.ids[k]; !dup {
			m.rememberLocked(k, s.Day)
		}
	}
}

func (m *Memory) loadBucket(s *snapBucket) {
	buckets := m.teams[s.Team]
	if buckets == nil {
		buckets = map[string]*Bucket{}
		m.teams[s.Team] = buckets
	}
	b := buckets[s.Period]
	if b == nil {
		b = newBucket(s.Period)
		buckets[s.Period] = b
	}
	b.Team.Add(s.Totals.totals())
	for _, pair := range []struct {
		dst map[string]*Totals
		src map[string]snapTotals
	}{{b.Keys, s.Keys}, {b.Models, s.Models}, {b.Providers, s.Providers}, {b.Sizes, s.Sizes}} {
		for name, st := range pair.src {
			addTo(pair.dst, name, st.totals())
		}
	}
}
