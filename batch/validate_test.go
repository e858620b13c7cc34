package batch

import (
	"bytes"
	"strings"
	"testing"
)

// acceptAll is a body check that accepts any body, naming model "m".
func acceptAll([]byte) (string, *LineError) { return "m", nil }

func TestValidateSpansPointAtTheLines(t *testing.T) {
	in := "  " + `{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{}}` + "\r\n" +
		"\n" +
		`{"custom_id":"b","method":"POST","url":"/v1/chat/completions","body":{"x":1},"extra":true}`
	v, err := validate(strings.NewReader(in), EndpointChat, 1<<20, acceptAll)
	if err != nil || v.invalid != 0 {
		t.Fatalf("%v %+v", err, v.errors)
	}
	if len(v.lines) != 2 || v.model != "m" {
		t.Fatalf("lines %+v model %q", v.lines, v.model)
	}
	for i, id := range []string{`"a"`, `"b"`} {
		sp := v.lines[i]
		line := in[sp.Off : sp.Off+int64(sp.Len)]
		e, lerr := parseEnvelope([]byte(line))
		if lerr != nil || string(e.customID) != id {
			t.Errorf("span %d: %q", i, line)
		}
	}
}

func TestValidateNamesEveryBadLine(t *testing.T) {
	ok := `{"custom_id":"%s","method":"POST","url":"/v1/chat/completions","body":{}}`
	line := func(id string) string { return strings.Replace(ok, "%s", id, 1) }
	in := strings.Join([]string{
		line("a"),
		`[1,2]`,
		`{"custom_id":5,"method":"POST","url":"/v1/chat/completions","body":{}}`,
		`{"custom_id":"","method":"POST","url":"/v1/chat/completions","body":{}}`,
		line("a"),
		`{"custom_id":"c","url":"/v1/chat/completions","body":{}}`,
		`{"custom_id":"d","method":"POST","body":{}}`,
		`{"custom_id":"e","method":"POST","url":"/v1/chat/completions"}`,
		`{"custom_id":"f","method":"POST","url":"/v1/chat/completions","body":"x"}`,
		line(strings.Repeat("x", MaxCustomID+1)),
		`{"custom_id":"g","method":"POST","url":"/v1/chat/completions","body":{}}` + strings.Repeat(" ", 200),
		line("h"),
	}, "\n")
	check := func(body []byte) (string, *LineError) {
		return "m", nil
	}
	v, err := validate(strings.NewReader(in), EndpointChat, 150, check)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]string{2: "invalid_json_line", 3: "invalid_value", 4: "invalid_value", 5: "duplicate_custom_id",
		6: "missing_required_parameter", 7: "missing_required_parameter", 8: "missing_required_parameter",
		9: "invalid_value", 10: "line_too_large", 11: "line_too_large"}
	got := map[int]string{}
	for _, e := range v.errors {
		got[e.Line] = e.Code
	}
	if len(got) != len(want) {
		t.Errorf("errors %+v", v.errors)
	}
	for l, c := range want {
		if got[l] != c {
			t.Errorf("line %d: %q, want %q", l, got[l], c)
		}
	}
	if len(v.lines) != 2 {
		t.Errorf("valid lines %d, want 2", len(v.lines))
	}
}

func TestValidateFileLimits(t *testing.T) {
	v, _ := validate(strings.NewReader("\n \n"), EndpointChat, 100, acceptAll)
	if v.invalid != 1 || v.errors[0].Code != "empty_file" {
		t.Errorf("empty: %+v", v.errors)
	}
	var b bytes.Buffer
	for range maxReported + 10 {
		b.WriteString("nope\n")
	}
	v, _ = validate(&b, EndpointChat, 100, acceptAll)
	if v.invalid != maxReported+10 || len(v.errors) != maxReported {
		t.Errorf("invalid %d, listed %d", v.invalid, len(v.errors))
	}
	// The body check's verdict names the line.
	v, _ = validate(strings.NewReader(`{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{}}`),
		EndpointChat, 1000, func([]byte) (string, *LineError) {
			return "", &LineError{Code: "model_not_allowed", Param: "body.model", Message: "no."}
		})
	if v.invalid != 1 || v.errors[0].Line != 1 || v.errors[0].Message != "Line 1: no." {
		t.Errorf("%+v", v.errors)
	}
}

func FuzzValidate(f *testing.F) {
	f.Add([]byte(`{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{}}` + "\n"))
	f.Add([]byte("{\"custom_id\":\"\\u00e9\",\"body\":{\"a\":[1,{}]}}\r\n\n[]"))
	f.Add([]byte(`{"custom_id":"a","custom_id":"b","method":"POST","url":"x","body":{}}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		v, err := validate(bytes.NewReader(in), EndpointChat, 64, acceptAll)
		if err != nil {
			t.Fatal(err)
		}
		for _, sp := range v.lines {
			if sp.Off < 0 || sp.Len <= 0 || sp.Off+int64(sp.Len) > int64(len(in)) {
				t.Fatalf("span %+v outside %d bytes", sp, len(in))
			}
			if _, lerr := parseEnvelope(in[sp.Off : sp.Off+int64(sp.Len)]); lerr != nil {
				t.Fatalf("a valid line's span does not parse: %v", lerr)
			}
		}
	})
}
