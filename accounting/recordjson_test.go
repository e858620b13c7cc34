package accounting

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"
	"time"
)

// sameAsMarshal fails t unless appendRecordJSON encodes r byte for byte as
// json.Marshal does, or refuses it likewise; appended to a prefix, it must
// leave the prefix alone.
func sameAsMarshal(t *testing.T, r *Record) {
	t.Helper()
	want, wantErr := json.Marshal(r)
	prefix := []byte("prefix\n")
	got, err := appendRecordJSON(prefix, r)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("%+v: error %v, json.Marshal's %v", r, err, wantErr)
	}
	if !bytes.HasPrefix(got, []byte("prefix\n")) {
		t.Fatalf("%+v: the prefix became %q", r, got)
	}
	if err != nil {
		if len(got) != len(prefix) {
			t.Fatalf("%+v: %q appended with the error %v", r, got[len(prefix):], err)
		}
		return
	}
	if got = got[len(prefix):]; !bytes.Equal(got, want) {
		t.Fatalf("%+v:\n got %s\nwant %s", r, got, want)
	}
}

// hostile are strings json.Marshal must escape or repair.
var hostile = []string{"", "plain", `"quoted"`, `back\slash`, "\x00\x01\x1f\x7f", "\b\f\n\r\t", "<script>&amp;</script>",
	"\u2028\u2029", "caf\u00e9 \U0001F600", "\xff", "a\xc3", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x80", "\ufffd"}

// TestRecordJSONExtremes: zero values, empty strings, the largest and
// smallest numbers, times at the edges of what RFC 3339 holds and past them.
func TestRecordJSONExtremes(t *testing.T) {
	at := time.Date(2026, 11, 25, 13, 4, 5, 123456789, time.UTC)
	sameAsMarshal(t, &Record{})
	sameAsMarshal(t, &Record{ID: "r", Time: at})
	sameAsMarshal(t, &Record{ID: "r", Time: at, Key: "k", Team: "t", Model: "m", Size: "4K", Provider: "p",
		Attempts: math.MaxInt, Images: math.MaxInt64, PromptTokens: math.MaxInt64, TextTokens: math.MaxInt64,
		ImageTokens: math.MaxInt64, CostMicros: math.MaxInt64, ListCostMicros: math.MaxInt64, Status: math.MaxInt,
		Stream: true})
	sameAsMarshal(t, &Record{ID: "r", Time: at, Attempts: math.MinInt, Images: math.MinInt64, Status: -1})
	for _, tm := range []time.Time{
		{}, at.Truncate(time.Second), at.Truncate(time.Millisecond), time.Unix(0, 0),
		time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		at.In(time.FixedZone("", 5*3600+30*60)), at.In(time.FixedZone("", -23*3600-59*60)),
		at.In(time.FixedZone("", 24*3600)), at.In(time.FixedZone("", -24*3600)), at.In(time.FixedZone("", 3600+1)),
		at.In(time.FixedZone("", 100*3600)), at.Local(),
	} {
		sameAsMarshal(t, &Record{ID: "r", Time: tm})
	}
	for _, s := range hostile {
		sameAsMarshal(t, &Record{ID: s, Time: at, Key: s, Team: s, Model: s, Size: s, Provider: s})
	}
}

// FuzzRecordJSON: appendRecordJSON is json.Marshal for any record. Run:
//
//	go test -run '^$' -fuzz FuzzRecordJSON -fuzztime 60s ./accounting/
func FuzzRecordJSON(f *testing.F) {
	for i, s := range hostile {
		f.Add(s, s, "team", "model", s, "provider", i, int64(i), int64(-i), int64(math.MaxInt64), int64(0),
			int64(i)<<40, int64(1), 200, i%2 == 0, int64(1764075845+i), int64(i*123456789), i*3600)
	}
	f.Fuzz(func(t *testing.T, id, key, team, model, size, provider string, attempts int, images, prompt, text,
		imageTok, cost, list int64, status int, stream bool, sec, nsec int64, offset int) {
		r := Record{ID: id, Time: time.Unix(sec, nsec), Key: key, Team: team, Model: model, Size: size,
			Provider: provider, Attempts: attempts, Images: images, PromptTokens: prompt, TextTokens: text,
			ImageTokens: imageTok, CostMicros: cost, ListCostMicros: list, Status: status, Stream: stream}
		r.Time = r.Time.UTC()
		sameAsMarshal(t, &r)
		r.Time = r.Time.In(time.FixedZone("", offset))
		sameAsMarshal(t, &r)
	})
}
