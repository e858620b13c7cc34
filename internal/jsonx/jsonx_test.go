package jsonx

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
)

func TestKindOf(t *testing.T) {
	tests := []struct {
		in   string
		want Kind
	}{
		{``, Invalid},
		{`   `, Invalid},
		{`null`, Null},
		{`true`, Boolean},
		{`false`, Boolean},
		{`0`, Number},
		{`-1`, Number},
		{`9e9`, Number},
		{`"x"`, String},
		{`[]`, Array},
		{`{}`, Object},
		{" \t\r\n{}", Object},
		{`+1`, Invalid},
		{`.5`, Invalid},
		{`x`, Invalid},
		{`]`, Invalid},
		// From the first byte only: the rest is not checked.
		{`nope`, Null},
		{`"unterminated`, String},
	}
	for _, tt := range tests {
		if got := KindOf([]byte(tt.in)); got != tt.want {
			t.Errorf("KindOf(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestKindString(t *testing.T) {
	if got := Boolean.String(); got != "boolean" {
		t.Errorf("Boolean.String() = %q", got)
	}
	if got := Kind(200).String(); got != "Kind(200)" {
		t.Errorf("Kind(200).String() = %q", got)
	}
}

func TestSkipWS(t *testing.T) {
	tests := []struct {
		in   string
		i    int
		want int
	}{
		{``, 0, 0},
		{`x`, 0, 0},
		{" \t\r\nx", 0, 4},
		{"  ", 0, 2},
		{"a  b", 1, 3},
		{"\v\fx", 0, 0}, // not JSON whitespace
		{"\u00a0x", 0, 0},
	}
	for _, tt := range tests {
		if got := SkipWS([]byte(tt.in), tt.i); got != tt.want {
			t.Errorf("SkipWS(%q, %d) = %d, want %d", tt.in, tt.i, got, tt.want)
		}
	}
}

func TestSkipValue(t *testing.T) {
	tests := []struct {
		in   string
		i    int
		want int // -1: an error is expected
	}{
		{`null`, 0, 4},
		{`true`, 0, 4},
		{`false`, 0, 5},
		{`  false  `, 0, 7},
		{`0`, 0, 1},
		{`-0`, 0, 2},
		{`-0.0e-0`, 0, 7},
		{`1e5`, 0, 3},
		{`1E+5`, 0, 4},
		{`123.456`, 0, 7},
		{`""`, 0, 2},
		{`"a\"b"`, 0, 6},
		{`"\\"`, 0, 4},
		{`"\/\b\f\n\r\t\u00e9\uD83D\uDE00"`, 0, 32},
		{"\"\xff\xfe\"", 0, 4}, // UTF-8 is not checked
		{`[]`, 0, 2},
		{`{}`, 0, 2},
		{`[ ]`, 0, 3},
		{`{ }`, 0, 3},
		{`[1,"2",[3],{"4":4}]`, 0, 19},
		{`{"a":{"b":[true,false,null]}}`, 0, 29},
		{"{ \"a\" : 1 , \"b\" :\n[ ] }", 0, 23},
		{`[1] trailing`, 0, 3}, // only one value is read
		{`{} x`, 0, 2},
		{`"a""b"`, 0, 3},
		{`[1,2] [3]`, 6, 9},
		{`1, 2`, 0, 1},
		{`1]`, 0, 1},
		{`1}`, 0, 1},

		{``, 0, -1},
		{`   `, 0, -1},
		{`x`, 0, -1},
		{`[1]`, 4, -1},
		{`[1]`, -1, -1},
		{`01`, 0, -1},
		{`-`, 0, -1},
		{`-a`, 0, -1},
		{`+1`, 0, -1},
		{`.5`, 0, -1},
		{`1.`, 0, -1},
		{`1.e5`, 0, -1},
		{`1e`, 0, -1},
		{`1e+`, 0, -1},
		{`1x`, 0, -1},
		{`1:`, 0, -1},
		{`NaN`, 0, -1},
		{`Infinity`, 0, -1},
		{`tru`, 0, -1},
		{`truex`, 0, -1},
		{`True`, 0, -1},
		{`nul`, 0, -1},
		{`nulll`, 0, -1},
		{`fals`, 0, -1},
		{`"abc`, 0, -1},
		{`"abc\"`, 0, -1},
		{`"\`, 0, -1},
		{`"\x"`, 0, -1},
		{`"\'"`, 0, -1},
		{`"\u12"`, 0, -1},
		{`"\u12g4"`, 0, -1},
		{`"\u123`, 0, -1},
		{"\"a\x00b\"", 0, -1},
		{"\"a\nb\"", 0, -1},
		{"\"a\x1fb\"", 0, -1},
		{`[`, 0, -1},
		{`[1`, 0, -1},
		{`[1,`, 0, -1},
		{`[1,]`, 0, -1},
		{`[,1]`, 0, -1},
		{`[1 2]`, 0, -1},
		{`[1}`, 0, -1},
		{`{]`, 0, -1},
		{`{`, 0, -1},
		{`{"a"`, 0, -1},
		{`{"a":`, 0, -1},
		{`{"a":1`, 0, -1},
		{`{"a":1,`, 0, -1},
		{`{"a":1,}`, 0, -1},
		{`{"a" 1}`, 0, -1},
		{`{"a"::1}`, 0, -1},
		{`{a:1}`, 0, -1},
		{`{1:1}`, 0, -1},
		{`{"a":1 "b":2}`, 0, -1},
		{`{"a":1]`, 0, -1},
		{`[{"a":1]}`, 0, -1},
		{`{"a":[1}]`, 0, -1},
		{`]`, 0, -1},
		{`}`, 0, -1},
		{`,`, 0, -1},
	}
	for _, tt := range tests {
		got, err := SkipValue([]byte(tt.in), tt.i)
		if tt.want < 0 {
			if err == nil {
				t.Errorf("SkipValue(%q, %d) = %d, want an error", tt.in, tt.i, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("SkipValue(%q, %d) = %d, %v, want %d", tt.in, tt.i, got, err, tt.want)
		}
	}
}

func TestSkipValueErrorIsSyntaxError(t *testing.T) {
	_, err := SkipValue([]byte(`[1, 2, x]`), 0)
	var se *SyntaxError
	if !errors.As(err, &se) {
		t.Fatalf("error %v (%T) is not a *SyntaxError", err, err)
	}
	if se.Offset != 7 {
		t.Errorf("Offset = %d, want 7", se.Offset)
	}
	if !strings.Contains(se.Error(), "offset 7") || !strings.Contains(se.Error(), "'x'") {
		t.Errorf("Error() = %q, want the offset and the character", se.Error())
	}
}

func TestValid(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{`null`, true},
		{" \t\r\n{} \t\r\n", true},
		{`[1,2,3]`, true},
		{`-0`, true},
		{`1e5`, true},
		{`0.5`, true},
		{`"x"`, true},
		{``, false},
		{` `, false},
		{`01`, false},
		{`00`, false},
		{`-01`, false},
		{`1 2`, false},
		{`{}{}`, false},
		{`{} x`, false},
		{`[1]]`, false},
		{"{}\v", false},
		{"\u00a0{}", false},
		{`"\ud800"`, true}, // lone surrogate escapes are valid JSON
		{"\"\xff\"", true}, // and so is invalid UTF-8 to json.Valid
	}
	for _, tt := range tests {
		if got := Valid([]byte(tt.in)); got != tt.want {
			t.Errorf("Valid(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// sampleDoc exercises every kind of token; every proper prefix of it is
// incomplete.
const sampleDoc = `{"candidates":[{"content":{"parts":[{"text":"a \"quoted\" \\ caf\u00e9 \ud83d\ude00"},` +
	`{"inlineData":{"mimeType":"image/png","data":"iVBORw0KGgo="}}],"role":"model"},` +
	`"finishReason":"STOP","index":0,"safety":[true,false,null]}],` +
	`"usageMetadata":{"promptTokenCount":-12,"ratio":1.5e-3,"big":12E+2,"zero":-0.0},"empty":[{},[],""]}`

func TestValidTruncatedAtEveryByte(t *testing.T) {
	doc := []byte(sampleDoc)
	if !Valid(doc) {
		t.Fatal("sample document is not valid")
	}
	for n := range len(doc) {
		if Valid(doc[:n]) {
			t.Errorf("Valid(doc[:%d]) = true, want false; prefix %q", n, doc[:n])
		}
		if end, err := SkipValue(doc[:n], 0); err == nil {
			t.Errorf("SkipValue(doc[:%d]) = %d, nil, want an error", n, end)
		}
		if err := ObjectEach(doc[:n], func(_, _ []byte) error { return nil }); err == nil {
			t.Errorf("ObjectEach(doc[:%d]) = nil, want an error", n)
		}
	}
}

func TestDeepNesting(t *testing.T) {
	const n = 100_000
	tests := []struct {
		name string
		doc  string
		want bool
	}{
		{"100k open brackets", strings.Repeat("[", n), false},
		{"100k balanced brackets", strings.Repeat("[", n) + strings.Repeat("]", n), false},
		{"100k open objects", strings.Repeat(`{"a":`, n), false},
		{"100k balanced objects", strings.Repeat(`{"a":`, n) + "1" + strings.Repeat("}", n), false},
		{"MaxDepth arrays", strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth), true},
		{"MaxDepth+1 arrays", strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1), false},
		{"MaxDepth mixed", strings.Repeat(`[{"k":`, MaxDepth/2) + "0" + strings.Repeat("}]", MaxDepth/2), true},
		{"MaxDepth+1 mixed", strings.Repeat(`[{"k":`, MaxDepth/2) + "[0]" + strings.Repeat("}]", MaxDepth/2), false},
		{"mismatch at depth", strings.Repeat("[", 200) + "{" + strings.Repeat("]", 201), false},
		// Around the hand-over from the one-word stack to the deep one.
		{"63 levels", strings.Repeat(`{"a":[`, 31) + "{}" + strings.Repeat("]}", 31), true},
		{"64 levels", strings.Repeat(`{"a":[`, 32) + strings.Repeat("]}", 32), true},
		{"65 levels", strings.Repeat(`{"a":[`, 32) + "{}" + strings.Repeat("]}", 32), true},
		{"66 levels then more", strings.Repeat(`[{"a":`, 33) + "0" + strings.Repeat("}]", 33) + "", true},
		{"deep subtree then siblings", "[" + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `,{"b":[1]},2]`, true},
		{"deep subtree closed by the wrong bracket", strings.Repeat("[", 64) + "{" + strings.Repeat("]", 65), false},
		{"mismatch just above the hand-over", strings.Repeat("[", 63) + "{" + "]" + strings.Repeat("]", 63), false},
		{"mismatch just below the hand-over", strings.Repeat("{\"a\":", 64) + "[]]" + strings.Repeat("}", 63), false},
		{"truncated deep", strings.Repeat("[", 70) + strings.Repeat("]", 69), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := []byte(tt.doc)
			if got := Valid(doc); got != tt.want {
				t.Errorf("Valid = %v, want %v", got, tt.want)
			}
			if _, err := SkipValue(doc, 0); (err == nil) != tt.want {
				t.Errorf("SkipValue error = %v, want error: %v", err, !tt.want)
			}
			if got := jsonValid(doc); got != tt.want {
				t.Errorf("json.Valid = %v, the test's expectation %v is wrong", got, tt.want)
			}
		})
	}
}

func TestObjectEach(t *testing.T) {
	type member struct{ key, value string }
	tests := []struct {
		in   string
		want []member
	}{
		{`{}`, nil},
		{" { } ", nil},
		{`{"a":1}`, []member{{"a", "1"}}},
		{" {\n \"a\" : 1 ,\t\"b\":[ 2 , 3 ] , \"c\" : { \"d\" : null } } ",
			[]member{{"a", "1"}, {"b", "[ 2 , 3 ]"}, {"c", `{ "d" : null }`}}},
		{`{"a":"x","a":"y"}`, []member{{"a", `"x"`}, {"a", `"y"`}}},
		{`{"":""}`, []member{{"", `""`}}},
		{`{"a\"b":1,"\u00e9":2,"\ud83d\ude00":3,"\n":4,"\ud800":5}`,
			[]member{{`a"b`, "1"}, {"é", "2"}, {"😀", "3"}, {"\n", "4"}, {"\uFFFD", "5"}}},
		{"{\"\xff\":1}", []member{{"\uFFFD", "1"}}},
	}
	for _, tt := range tests {
		var got []member
		err := ObjectEach([]byte(tt.in), func(k, v []byte) error {
			got = append(got, member{string(k), string(v)})
			return nil
		})
		if err != nil {
			t.Errorf("ObjectEach(%q) error %v", tt.in, err)
			continue
		}
		if fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("ObjectEach(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestObjectEachKeyAliasesUnlessEscaped(t *testing.T) {
	doc := []byte(`{"plain":1,"esc\u0061ped":2}`)
	var keys [][]byte
	if err := ObjectEach(doc, func(k, _ []byte) error { keys = append(keys, k); return nil }); err != nil {
		t.Fatal(err)
	}
	if !aliases(doc, keys[0]) {
		t.Error("unescaped key was copied")
	}
	if aliases(doc, keys[1]) || string(keys[1]) != "escaped" {
		t.Errorf("escaped key = %q, aliasing the input: %v", keys[1], aliases(doc, keys[1]))
	}
}

func TestObjectEachErrors(t *testing.T) {
	for _, in := range []string{
		``, ` `, `[]`, `null`, `"{}"`, `{`, `{"a"}`, `{"a":}`, `{"a":1,}`, `{,"a":1}`, `{"a":1 "b":2}`,
		`{"a":1}}`, `{"a":1} x`, `{"a":1}{}`, `{"a":01}`, `{"a":[}`, `{"a\x":1}`, "{\"a\x01\":1}", `{a:1}`,
	} {
		err := ObjectEach([]byte(in), func(_, _ []byte) error { return nil })
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("ObjectEach(%q) = %v, want a *SyntaxError", in, err)
		}
	}
}

func TestObjectEachStopsOnCallbackError(t *testing.T) {
	stop := errors.New("stop")
	var seen []string
	err := ObjectEach([]byte(`{"a":1,"b":2,"c":3,`), func(k, _ []byte) error {
		seen = append(seen, string(k))
		if string(k) == "b" {
			return stop
		}
		return nil
	})
	if err != stop {
		t.Errorf("error = %v, want the callback's", err)
	}
	if strings.Join(seen, ",") != "a,b" {
		t.Errorf("visited %v, want a,b", seen)
	}
}

func TestArrayEach(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{`[]`, nil},
		{" [ ] ", nil},
		{`[1]`, []string{"1"}},
		{" [ 1 , \"two\" ,\n[ 3 ] , { \"4\" : 4 } , null , true ] ", []string{"1", `"two"`, "[ 3 ]", `{ "4" : 4 }`, "null", "true"}},
	}
	for _, tt := range tests {
		var got []string
		err := ArrayEach([]byte(tt.in), func(i int, v []byte) error {
			if i != len(got) {
				t.Errorf("ArrayEach(%q) index %d, want %d", tt.in, i, len(got))
			}
			got = append(got, string(v))
			return nil
		})
		if err != nil || fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("ArrayEach(%q) = %q, %v, want %q", tt.in, got, err, tt.want)
		}
	}
	for _, in := range []string{``, `{}`, `[`, `[1`, `[1,]`, `[,]`, `[1 2]`, `[1]]`, `[1] 2`, `[01]`, `[}`} {
		if err := ArrayEach([]byte(in), func(int, []byte) error { return nil }); err == nil {
			t.Errorf("ArrayEach(%q) = nil, want an error", in)
		}
	}
	stop := errors.New("stop")
	n := 0
	err := ArrayEach([]byte(`[1,2,3]`), func(i int, _ []byte) error { n++; return stop })
	if err != stop || n != 1 {
		t.Errorf("ArrayEach with a failing callback = %v after %d calls, want stop after 1", err, n)
	}
}

func TestGet(t *testing.T) {
	tests := []struct {
		obj, key string
		want     string
		ok       bool
	}{
		{`{"a":1,"b":"two"}`, "a", "1", true},
		{`{"a":1,"b":"two"}`, "b", `"two"`, true},
		{` { "b" : [ 1 , 2 ] } `, "b", "[ 1 , 2 ]", true},
		{`{"a":1,"a":2}`, "a", "1", true},
		{`{"a":1}`, "A", "", false},
		{`{"a":1}`, "", "", false},
		{`{"":7}`, "", "7", true},
		{`{"outer":{"a":1}}`, "a", "", false}, // only top-level members
		{`{"x":"\"a\":1","a":2}`, "a", "2", true},
		{`{"\u0061":1}`, "a", "1", true},
		{`{"caf\u00e9":1}`, "café", "1", true},
		{`{"\ud83d\ude00":1}`, "😀", "1", true},
		{`{"a\"b":1}`, `a"b`, "1", true},
		{`{"a\\b":1}`, `a\b`, "1", true},
		{"{\"\xff\":1}", "\uFFFD", "1", true},
		{`{"k":1}`, "k\x00", "", false},
		// Stops at the match: a later error is not seen.
		{`{"a":1,"b":`, "a", "1", true},
		// Errors before the match are.
		{`{"x":01,"a":1}`, "a", "", false},
		{`{"x":1 "a":1}`, "a", "", false},
		{`{"a":1} x`, "b", "", false},
		{`[{"a":1}]`, "a", "", false},
		{``, "a", "", false},
	}
	for _, tt := range tests {
		got, ok := Get([]byte(tt.obj), tt.key)
		if ok != tt.ok || string(got) != tt.want {
			t.Errorf("Get(%q, %q) = %q, %v, want %q, %v", tt.obj, tt.key, got, ok, tt.want, tt.ok)
		}
	}
}

func TestGetLongEscapedKey(t *testing.T) {
	// Longer than Get's stack buffer for decoded keys.
	key := strings.Repeat("é", 100)
	obj := []byte(`{"` + strings.Repeat(`\u00e9`, 100) + `":true}`)
	if v, ok := Get(obj, key); !ok || string(v) != "true" {
		t.Errorf("Get = %q, %v", v, ok)
	}
}

func TestIndex(t *testing.T) {
	tests := []struct {
		arr  string
		i    int
		want string
		ok   bool
	}{
		{`[10,20,30]`, 0, "10", true},
		{`[10,20,30]`, 2, "30", true},
		{`[10,20,30]`, 3, "", false},
		{`[10,20,30]`, -1, "", false},
		{` [ [1,2] , {"a":[]} ] `, 1, `{"a":[]}`, true},
		{`[]`, 0, "", false},
		{`[1,2,`, 1, "2", true}, // stops at the element
		{`[01,2]`, 1, "", false},
		{`{"0":1}`, 0, "", false},
	}
	for _, tt := range tests {
		got, ok := Index([]byte(tt.arr), tt.i)
		if ok != tt.ok || string(got) != tt.want {
			t.Errorf("Index(%q, %d) = %q, %v, want %q, %v", tt.arr, tt.i, got, ok, tt.want, tt.ok)
		}
	}
}

func TestSpansDoNotOverwriteInputWhenAppendedTo(t *testing.T) {
	doc := []byte(`{"a":"xy","b":[1]}`)
	orig := string(doc)
	v, _ := Get(doc, "a")
	_ = append(v, "!!!!"...)
	e, _ := Index([]byte(`[1,2]`), 0)
	_ = append(e, '!')
	s, _ := StringBytes(nil, v)
	_ = append(s, "!!!!"...)
	if string(doc) != orig {
		t.Errorf("document changed to %q", doc)
	}
}

func TestStringBytes(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		aliases bool // the result is a subslice of the input
	}{
		{`""`, "", true},
		{`"abc"`, "abc", true},
		{` "abc" `, "abc", true},
		{`"café 😀"`, "café 😀", true},
		{`"<&>"`, "<&>", true},
		{`"a\"b"`, `a"b`, false},
		{`"\\\/\b\f\n\r\t"`, "\\/\b\f\n\r\t", false},
		{`"\u0041\u00e9\u20ac"`, "Aé€", false},
		{`"\u0000"`, "\x00", false},
		{`"\uD83D\uDE00"`, "😀", false},
		{`"\ud83d\ude00x"`, "😀x", false},
		// Invalid surrogates become U+FFFD as in encoding/json.
		{`"\ud800"`, "\uFFFD", false},
		{`"\udc00"`, "\uFFFD", false},
		{`"\ud800x"`, "\uFFFDx", false},
		{`"\ud800\u0041"`, "\uFFFDA", false},
		{`"\ud800\ud800\udc00"`, "\uFFFD𐀀", false},
		{`"\udc00\ud800"`, "\uFFFD\uFFFD", false},
		{`"\ud800\n"`, "\uFFFD\n", false},
		// So do bytes that are not UTF-8, one per byte.
		{"\"a\xffb\"", "a\uFFFDb", false},
		{"\"\xe2\x82\"", "\uFFFD\uFFFD", false},
		{"\"\xed\xa0\x80\"", "\uFFFD\uFFFD\uFFFD", false}, // a surrogate in UTF-8
		{"\"\xef\xbf\xbd\"", "\uFFFD", true},              // a real U+FFFD passes
		{`"` + strings.Repeat("x", 100) + `\n"`, strings.Repeat("x", 100) + "\n", false},
	}
	for _, tt := range tests {
		in := []byte(tt.in)
		got, err := StringBytes(nil, in)
		if err != nil || string(got) != tt.want {
			t.Errorf("StringBytes(%q) = %q, %v, want %q", tt.in, got, err, tt.want)
			continue
		}
		if len(got) > 0 && aliases(in, got) != tt.aliases {
			t.Errorf("StringBytes(%q) aliases input: %v, want %v", tt.in, aliases(in, got), tt.aliases)
		}
		if u, err := Unquote(in); err != nil || u != tt.want {
			t.Errorf("Unquote(%q) = %q, %v, want %q", tt.in, u, err, tt.want)
		}
	}
	for _, in := range []string{
		``, ` `, `abc`, `"`, `"abc`, `"abc\"`, `'abc'`, `"a" "b"`, `"a"x`, `"a"""`, `"\`, `"\x"`, `"\'"`,
		`"\u"`, `"\u12"`, `"\u12x4"`, `"\ud800\u12"`, "\"a\x00\"", "\"a\tb\"", "\"\x7f\x1f\"", `null`, `1`,
	} {
		if got, err := StringBytes(nil, []byte(in)); err == nil {
			t.Errorf("StringBytes(%q) = %q, want an error", in, got)
		}
		if _, err := Unquote([]byte(in)); err == nil {
			t.Errorf("Unquote(%q) succeeded, want an error", in)
		}
	}
}

func TestStringBytesReusesDst(t *testing.T) {
	dst := make([]byte, 3, 64)
	copy(dst, "old")
	got, err := StringBytes(dst, []byte(`"a\nb"`))
	if err != nil || string(got) != "a\nb" {
		t.Fatalf("StringBytes = %q, %v", got, err)
	}
	if &got[0] != &dst[:1][0] {
		t.Error("result is not in dst's array")
	}
}

func TestInt(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		err  error // nil, errSyntax or strconv.ErrRange
	}{
		{`0`, 0, nil},
		{`-0`, 0, nil},
		{`7`, 7, nil},
		{` 42 `, 42, nil},
		{`-42`, -42, nil},
		{`1290`, 1290, nil},
		{`9223372036854775807`, math.MaxInt64, nil},
		{`-9223372036854775808`, math.MinInt64, nil},
		{`9223372036854775808`, 0, strconv.ErrRange},
		{`-9223372036854775809`, 0, strconv.ErrRange},
		{`99999999999999999999`, 0, strconv.ErrRange},
		{`1.0`, 0, errSyntax},
		{`1e5`, 0, errSyntax},
		{`1E0`, 0, errSyntax},
		{`01`, 0, errSyntax},
		{`-`, 0, errSyntax},
		{`+1`, 0, errSyntax},
		{``, 0, errSyntax},
		{`1 2`, 0, errSyntax},
		{`"1"`, 0, errSyntax},
		{`0x10`, 0, errSyntax},
		{`1_000`, 0, errSyntax},
	}
	for _, tt := range tests {
		got, err := Int([]byte(tt.in))
		if !matchErr(err, tt.err) || got != tt.want {
			t.Errorf("Int(%q) = %d, %v, want %d, %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestFloat(t *testing.T) {
	tests := []struct {
		in   string
		want float64
		err  error
	}{
		{`0`, 0, nil},
		{`-0`, math.Copysign(0, -1), nil},
		{`1e5`, 1e5, nil},
		{`1E+5`, 1e5, nil},
		{`-1.5e-3`, -1.5e-3, nil},
		{` 0.1 `, 0.1, nil},
		{`9223372036854775808`, 9223372036854775808, nil},
		{`1e-400`, 0, nil},
		{`1e400`, math.Inf(1), strconv.ErrRange},
		{`01`, 0, errSyntax},
		{`1.`, 0, errSyntax},
		{`.1`, 0, errSyntax},
		{`1e`, 0, errSyntax},
		{`Inf`, 0, errSyntax},
		{`NaN`, 0, errSyntax},
		{`0x1p3`, 0, errSyntax},
		{`1_0`, 0, errSyntax},
		{``, 0, errSyntax},
	}
	for _, tt := range tests {
		got, err := Float([]byte(tt.in))
		if !matchErr(err, tt.err) || got != tt.want || math.Signbit(got) != math.Signbit(tt.want) {
			t.Errorf("Float(%q) = %v, %v, want %v, %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestBool(t *testing.T) {
	tests := []struct {
		in      string
		want    bool
		wantErr bool
	}{
		{`true`, true, false},
		{`false`, false, false},
		{" true\n", true, false},
		{`True`, false, true},
		{`tru`, false, true},
		{`truex`, false, true},
		{`1`, false, true},
		{`"true"`, false, true},
		{`null`, false, true},
		{``, false, true},
	}
	for _, tt := range tests {
		got, err := Bool([]byte(tt.in))
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("Bool(%q) = %v, %v, want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestAppendString(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"", `""`},
		{"abc", `"abc"`},
		{`a"b\c`, `"a\"b\\c"`},
		{"/", `"/"`},
		{"<&>", `"<&>"`}, // HTML characters are not escaped
		{"\b\f\n\r\t", `"\b\f\n\r\t"`},
		{"\x00\x01\x1f\x7f", `"\u0000\u0001\u001f` + "\x7f\""},
		{"café 😀", `"café 😀"`},
		{"\u2028\u2029", `"\u2028\u2029"`},
		{"a\xffb", `"a\ufffdb"`},
		{"\xe2\x82", `"\ufffd\ufffd"`},
		{"\xed\xa0\x80", `"\ufffd\ufffd\ufffd"`},
		{strings.Repeat("A", 40) + "\n" + strings.Repeat("B", 40), `"` + strings.Repeat("A", 40) + `\n` + strings.Repeat("B", 40) + `"`},
	}
	for _, tt := range tests {
		if got := AppendString([]byte("x"), tt.in); string(got) != "x"+tt.want {
			t.Errorf("AppendString(%q) = %s, want x%s", tt.in, got, tt.want)
		}
		if got := AppendStringBytes(nil, []byte(tt.in)); string(got) != tt.want {
			t.Errorf("AppendStringBytes(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

// TestWordScanners checks the eight-bytes-at-a-time scanners against the
// tables at every position and for every byte, so that a mistake in the bit
// tricks cannot hide behind inputs that happen to be aligned.
func TestWordScanners(t *testing.T) {
	for c := range 256 {
		for pos := range 40 {
			buf := bytes.Repeat([]byte("a"), 40)
			buf[pos] = byte(c)
			wantRaw, wantPlain := 40, 40
			if !rawSafe[c] {
				wantRaw = pos
			}
			if !plainSafe[c] {
				wantPlain = pos
			}
			if got := skipRaw(buf, 0); got != wantRaw {
				t.Fatalf("skipRaw with %#x at %d = %d, want %d", c, pos, got, wantRaw)
			}
			if got := skipPlain(buf, 0); got != wantPlain {
				t.Fatalf("skipPlain with %#x at %d = %d, want %d", c, pos, got, wantPlain)
			}
			if got := skipPlain(string(buf), 0); got != wantPlain {
				t.Fatalf("skipPlain(string) with %#x at %d = %d, want %d", c, pos, got, wantPlain)
			}
		}
	}
	// Two stop bytes in one word: the first one wins.
	for _, pair := range [][2]byte{{0x00, '"'}, {'"', 0x00}, {0x1f, 0x20}, {'\\', 0x01}} {
		buf := []byte("aaaaaaaaaaaaaaaaaaaaaaaa")
		buf[3], buf[4] = pair[0], pair[1]
		if got := skipRaw(buf, 0); got != 3 {
			t.Errorf("skipRaw(%q) = %d, want 3", buf, got)
		}
	}
}

func TestAllocations(t *testing.T) {
	doc := imageDoc(64 << 10)
	plain := []byte(`{"a":1,"key":"value","n":[1,2,3]}`)
	arr := []byte(`[1,"two",[3]]`)
	str := []byte(`"` + strings.Repeat("QUJD", 1000) + `"`)
	dst := make([]byte, 0, 8<<10)
	big := strings.Repeat("QUJD", 1000)
	var sink int
	checks := []struct {
		name string
		fn   func()
	}{
		{"SkipValue", func() { n, _ := SkipValue(doc, 0); sink += n }},
		{"Valid", func() {
			if Valid(doc) {
				sink++
			}
		}},
		{"ObjectEach", func() {
			_ = ObjectEach(plain, func(k, v []byte) error { sink += len(k) + len(v); return nil })
		}},
		{"ArrayEach", func() {
			_ = ArrayEach(arr, func(i int, v []byte) error { sink += i + len(v); return nil })
		}},
		{"Get", func() { v, _ := Get(doc, "usageMetadata"); sink += len(v) }},
		{"Get escaped key", func() { v, _ := Get([]byte(`{"\u0061":1}`), "a"); sink += len(v) }},
		{"Index", func() { v, _ := Index([]byte(`[1,2,3]`), 2); sink += len(v) }},
		{"StringBytes", func() { v, _ := StringBytes(nil, str); sink += len(v) }},
		{"StringBytes escaped into dst", func() { v, _ := StringBytes(dst, []byte(`"a\nb"`)); sink += len(v) }},
		{"Int", func() { n, _ := Int([]byte("1290")); sink += int(n) }},
		{"Float", func() { f, _ := Float([]byte("-1.5e-3")); sink += int(f) }},
		{"Bool", func() {
			if b, _ := Bool([]byte("true")); b {
				sink++
			}
		}},
		{"AppendString", func() { sink += len(AppendString(dst[:0], big)) }},
		{"AppendStringBytes", func() { sink += len(AppendStringBytes(dst[:0], str)) }},
	}
	for _, c := range checks {
		if n := testing.AllocsPerRun(20, c.fn); n != 0 {
			t.Errorf("%s: %v allocations per run, want 0", c.name, n)
		}
	}
	_ = sink
}

var errSyntax = errors.New("any *SyntaxError")

// matchErr reports whether err is what a table asked for: nil, any
// *SyntaxError (errSyntax), or an error that errors.Is the given one.
func matchErr(err, want error) bool {
	switch want {
	case nil:
		return err == nil
	case errSyntax:
		var se *SyntaxError
		return errors.As(err, &se)
	default:
		return errors.Is(err, want)
	}
}

// aliases reports whether sub shares memory with within.
func aliases(within, sub []byte) bool {
	if len(sub) == 0 || len(within) == 0 {
		return false
	}
	for i := range within {
		if &within[i] == &sub[0] {
			return true
		}
	}
	return false
}

// TestGetManyIsGetForEachKey: over Get's cases, GetMany finds for each key
// what Get finds, whatever keys ask along with it.
func TestGetManyIsGetForEachKey(t *testing.T) {
	objs := []string{`{"a":1,"b":"two"}`, ` { "b" : [ 1 , 2 ] } `, `{"a":1,"a":2}`, `{"":7}`, `{"outer":{"a":1}}`,
		`{"x":"\"a\":1","a":2}`, `{"\u0061":1}`, `{"caf\u00e9":1}`, `{"a\"b":1}`, "{\"\xff\":1}", `{"a":1,"b":`,
		`{"x":01,"a":1}`, `{"x":1 "a":1}`, `{"a":1} x`, `[{"a":1}]`, ``, `{"b":2,"a":1,"c":{"a":0},"b":3}`}
	keys := []string{"a", "b", "", "x", "café", `a"b`, "\uFFFD", "c", "missing"}
	for _, obj := range objs {
		for n := 1; n <= len(keys); n++ {
			out := make([][]byte, n)
			GetMany([]byte(obj), keys[:n], out)
			for i, k := range keys[:n] {
				want, ok := Get([]byte(obj), k)
				if (out[i] != nil) != ok || string(out[i]) != string(want) {
					t.Errorf("GetMany(%q, %q)[%d] = %q, Get = %q, %v", obj, keys[:n], i, out[i], want, ok)
				}
			}
		}
	}
}
