package jsonx

// Differential tests: encoding/json is the reference for what valid JSON is,
// how a string decodes and how a string is written.

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

func jsonValid(data []byte) bool { return json.Valid(data) }

// stdEncode is what json.Encoder with SetEscapeHTML(false) writes for s,
// without its trailing newline.
func stdEncode(t testing.TB, s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		t.Fatalf("encoding %q: %v", s, err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// corpus returns documents, valid and not, for the differential tests: hand
// written edge cases, the sample document, and the upstream fixtures that
// internal/fakeup serves (when they are there), which are the shapes the
// gateway really reads.
func corpus(t testing.TB) [][]byte {
	docs := []string{
		``, ` `, `null`, `true`, `false`, `0`, `-0`, `-0.0`, `1e5`, `1E-5`, `1.5e+10`, `01`, `-01`, `1.`, `.1`,
		`-`, `+1`, `1e`, `1e+`, `0x10`, `NaN`, `Infinity`, `-Infinity`, `tru`, `nul`, `fals`, `truex`, `nullnull`,
		`""`, `"abc"`, `"\u00e9"`, `"\ud83d\ude00"`, `"\ud800"`, `"\udc00\ud800"`, `"\u12"`, `"\x"`, `"\'"`,
		"\"\x00\"", "\"\x1f\"", "\"\x7f\"", "\"\xff\"", "\"\xed\xa0\x80\"", `"a`, `"a\"`, `"\\"`, `"\/"`,
		`[]`, `{}`, `[ ]`, `{ }`, `[1,2]`, `[1,,2]`, `[1,]`, `[,]`, `[1 2]`, `[[]]`, `[[]`, `[]]`, `[}`, `{]`,
		`{"a":1}`, `{"a":1,}`, `{"a"}`, `{"a":}`, `{:1}`, `{"a" 1}`, `{"a":1 "b":2}`, `{a:1}`, `{'a':1}`,
		`{"a":1}}`, `{"a":{"b":[1,{"c":null}]}}`, `{"a":1,"a":2}`, `{"\u0061":1,"a":2}`, `{"":{"":[""]}}`,
		" \t\n\r[ \t\n\r1 \t\n\r, \t\n\r2 \t\n\r] \t\n\r", "\v[]", "[]\f", "\u00a0[]", "[]\x00",
		`[1] [2]`, `1 2`, `{} {}`, `"a" "b"`, `"a""b"`, `[1]x`, `1x`, `[-]`, `[--1]`, `[1.e1]`, `[1e1.5]`,
		`{"k":"v"}` + "\n", "\ufeff{}", `[1e999]`, `[-1e-999]`, `{"a":[1,2,{"b":"c\n"}]}`,
		sampleDoc,
	}
	var out [][]byte
	for _, d := range docs {
		out = append(out, []byte(d))
	}
	for n := range len(sampleDoc) {
		out = append(out, []byte(sampleDoc[:n]))
	}
	files, _ := filepath.Glob("../fakeup/fixtures/*/*.json")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// mutations returns n deterministic random edits of the sample document:
// the kind of damage (a dropped, doubled or changed byte) that tells a strict
// scanner from a lenient one.
func mutations(n int) [][]byte {
	r := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("{}[]\":,\\/ \t\n0123456789-+.eEtrufalsn\x00\x1f\x7f\xff\xc3\xa9u")
	out := make([][]byte, 0, n)
	for range n {
		d := []byte(sampleDoc)
		for range 1 + r.IntN(3) {
			p := r.IntN(len(d))
			switch r.IntN(3) {
			case 0:
				d = append(d[:p], d[p+1:]...)
			case 1:
				d = append(d[:p+1], d[p:]...)
			default:
				d[p] = alphabet[r.IntN(len(alphabet))]
			}
		}
		out = append(out, d)
	}
	return out
}

func TestValidMatchesEncodingJSON(t *testing.T) {
	docs := append(corpus(t), mutations(20000)...)
	mismatches := 0
	for _, d := range docs {
		if got, want := Valid(d), json.Valid(d); got != want {
			t.Errorf("Valid(%q) = %v, json.Valid = %v", d, got, want)
			if mismatches++; mismatches > 10 {
				t.Fatal("too many mismatches")
			}
		}
	}
}

// TestEachMatchesEncodingJSON compares ObjectEach and ArrayEach with
// unmarshalling into json.RawMessage members, which hold the exact value
// bytes encoding/json saw.
func TestEachMatchesEncodingJSON(t *testing.T) {
	for _, d := range append(corpus(t), mutations(5000)...) {
		var obj map[string]json.RawMessage
		wantErr := json.Unmarshal(d, &obj) != nil || obj == nil
		got := map[string]json.RawMessage{}
		first := map[string]json.RawMessage{}
		err := ObjectEach(d, func(k, v []byte) error {
			got[string(k)] = json.RawMessage(v) // the last duplicate wins, as in encoding/json
			if _, ok := first[string(k)]; !ok {
				first[string(k)] = json.RawMessage(v)
			}
			return nil
		})
		if (err != nil) != wantErr {
			t.Errorf("ObjectEach(%q) error %v, encoding/json error: %v", d, err, wantErr)
		} else if err == nil {
			if len(got) != len(obj) {
				t.Errorf("ObjectEach(%q) has %d members, encoding/json %d", d, len(got), len(obj))
			}
			for k, v := range obj {
				if !bytes.Equal(got[k], v) {
					t.Errorf("ObjectEach(%q)[%q] = %s, encoding/json %s", d, k, got[k], v)
				}
				// Get returns the first duplicate, encoding/json keeps the last.
				if g, ok := Get(d, k); !ok || !bytes.Equal(g, first[k]) {
					t.Errorf("Get(%q, %q) = %s, %v, want %s", d, k, g, ok, first[k])
				}
			}
		}

		var arr []json.RawMessage
		wantErr = json.Unmarshal(d, &arr) != nil || arr == nil
		var elems []json.RawMessage
		err = ArrayEach(d, func(i int, v []byte) error {
			elems = append(elems, v)
			return nil
		})
		if (err != nil) != wantErr {
			t.Errorf("ArrayEach(%q) error %v, encoding/json error: %v", d, err, wantErr)
		} else if err == nil {
			if len(elems) != len(arr) {
				t.Errorf("ArrayEach(%q) has %d elements, encoding/json %d", d, len(elems), len(arr))
				continue
			}
			for i := range arr {
				if !bytes.Equal(elems[i], arr[i]) {
					t.Errorf("ArrayEach(%q)[%d] = %s, encoding/json %s", d, i, elems[i], arr[i])
				}
				if e, ok := Index(d, i); !ok || !bytes.Equal(e, arr[i]) {
					t.Errorf("Index(%q, %d) = %s, %v, encoding/json %s", d, i, e, ok, arr[i])
				}
			}
		}
	}
}

// stringLiterals returns JSON string literals, well-formed and not, covering
// every byte value raw and every escape, plus surrogate combinations.
func stringLiterals() []string {
	var lits []string
	for c := range 256 {
		lits = append(lits, "\"a"+string([]byte{byte(c)})+"b\"")
		lits = append(lits, `"\`+string([]byte{byte(c)})+`"`)
	}
	for _, e := range []string{
		`\u0000`, `\u001f`, `\u0020`, `\u007f`, `\u0080`, `\u00e9`, `\u07ff`, `\u0800`, `\u2028`, `\ufffd`,
		`\uffff`, `\uD800`, `\uDBFF`, `\uDC00`, `\uDFFF`, `\ud83d\ude00`, `\uD83D\uDE00`, `\udbff\udfff`,
		`\ud800\ud800`, `\udc00\udc00`, `\udc00\ud800`, `\ud800\udc00\udc00`, `\ud800x`, `\ud800\n`,
		`\ud800\u0041`, `\ud800\u`, `\ud800\uzzzz`, `\u`, `\u1`, `\u12`, `\u123`, `\u123g`, `\U0041`,
		"\xc3\xa9", "\xc3", "\xa9", "\xe2\x82\xac", "\xe2\x82", "\xf0\x9f\x98\x80", "\xf0\x9f\x98",
		"\xed\xa0\x80", "\xef\xbf\xbd", "\xf4\x90\x80\x80", "\xc0\xaf", "\xff\xfe",
	} {
		lits = append(lits, `"`+e+`"`, `"x`+e+`y"`, `"`+e+e+`"`)
	}
	lits = append(lits, `""`, ` "a" `, `"a" x`, `"a"`+"\n", `"`, `"a`, `"a\"`, `a`, `1`, `[]`, `"\\\"\/\b\f\n\r\t"`)
	return lits
}

func TestStringBytesMatchesEncodingJSON(t *testing.T) {
	lits := stringLiterals()
	for _, d := range corpus(t) {
		lits = append(lits, string(d))
	}
	for _, lit := range lits {
		checkStringBytes(t, []byte(lit))
	}
}

// checkStringBytes compares StringBytes and Unquote with json.Unmarshal into
// a string.
func checkStringBytes(t *testing.T, lit []byte) {
	if string(trimWS(lit)) == "null" {
		return // json.Unmarshal leaves the string alone; not a string to us
	}
	var want string
	wantErr := json.Unmarshal(lit, &want)
	got, err := StringBytes(nil, lit)
	if (err != nil) != (wantErr != nil) || string(got) != want {
		t.Errorf("StringBytes(%q) = %q, %v; encoding/json %q, %v", lit, got, err, want, wantErr)
	}
	u, err := Unquote(lit)
	if (err != nil) != (wantErr != nil) || u != want {
		t.Errorf("Unquote(%q) = %q, %v; encoding/json %q, %v", lit, u, err, want, wantErr)
	}
}

// stringSamples returns Go strings to encode: every byte alone and inside
// text, every rune around the interesting boundaries, and long mixes.
func stringSamples() []string {
	var ss []string
	for c := range 256 {
		b := string([]byte{byte(c)})
		ss = append(ss, b, "abcdefghijklmnop"+b+"qrstuvwxyz012345", strings.Repeat(b, 20))
	}
	for _, r := range []rune{0x7f, 0x80, 0xe9, 0x7ff, 0x800, 0x2027, 0x2028, 0x2029, 0x202a, 0xd7ff, 0xe000,
		0xfffd, 0xffff, 0x10000, 0x1f600, 0x10ffff} {
		ss = append(ss, string(r), "0123456789abcdef"+string(r)+"0123456789abcdef")
	}
	ss = append(ss, "", sampleDoc, strings.Repeat("<a href=\"x\">&amp;</a>\u2028\n", 10))
	r := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		b := make([]byte, r.IntN(64))
		for i := range b {
			if r.IntN(4) == 0 {
				b[i] = byte(r.IntN(256))
			} else {
				b[i] = byte('A' + r.IntN(26))
			}
		}
		ss = append(ss, string(b))
	}
	return ss
}

func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range stringSamples() {
		checkAppendString(t, s)
	}
}

// checkAppendString compares AppendString with json.Encoder and checks that
// the output reads back.
func checkAppendString(t *testing.T, s string) {
	want := stdEncode(t, s)
	got := AppendString(nil, s)
	if !bytes.Equal(got, want) {
		t.Errorf("AppendString(%q) = %s, json.Encoder %s", s, got, want)
	}
	if gotB := AppendStringBytes([]byte("pre"), []byte(s)); string(gotB) != "pre"+string(want) {
		t.Errorf("AppendStringBytes(%q) = %s, json.Encoder %s", s, gotB, want)
	}
	var back string
	if err := json.Unmarshal(got, &back); err != nil {
		t.Fatalf("AppendString(%q) = %s does not decode: %v", s, got, err)
	}
	if utf8.ValidString(s) && back != s {
		t.Errorf("AppendString(%q) decodes to %q", s, back)
	}
	if sb, err := StringBytes(nil, got); err != nil || string(sb) != back {
		t.Errorf("StringBytes(AppendString(%q)) = %q, %v, encoding/json %q", s, sb, err, back)
	}
}

func FuzzValid(f *testing.F) {
	for _, d := range corpus(f) {
		f.Add(d)
	}
	f.Add([]byte(strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1)))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, want := Valid(data), json.Valid(data)
		if got != want {
			t.Fatalf("Valid(%q) = %v, json.Valid = %v", data, got, want)
		}
		end, err := SkipValue(data, 0)
		if want {
			if err != nil || SkipWS(data, end) != len(data) {
				t.Fatalf("SkipValue(%q) = %d, %v on a valid document", data, end, err)
			}
			each := func(_, _ []byte) error { return nil }
			switch KindOf(data) {
			case Object:
				if err := ObjectEach(data, each); err != nil {
					t.Fatalf("ObjectEach(%q) = %v on a valid object", data, err)
				}
			case Array:
				if err := ArrayEach(data, func(int, []byte) error { return nil }); err != nil {
					t.Fatalf("ArrayEach(%q) = %v on a valid array", data, err)
				}
			}
		} else if err == nil && end > len(data) {
			t.Fatalf("SkipValue(%q) = %d past the end", data, end)
		}
	})
}

func FuzzStringBytes(f *testing.F) {
	for _, lit := range stringLiterals() {
		f.Add([]byte(lit))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkStringBytes(t, data)
		// The fuzzer rarely closes a quote on its own: also try its input
		// as the body of a literal.
		checkStringBytes(t, append(append([]byte{'"'}, data...), '"'))
	})
}

func FuzzAppendString(f *testing.F) {
	// Every eighth sample still covers each kind of byte and rune; all of
	// them make the fuzzer's warm-up longer than the run.
	for i, s := range stringSamples() {
		if i%8 == 0 {
			f.Add(s)
		}
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkAppendString(t, s)
	})
}
