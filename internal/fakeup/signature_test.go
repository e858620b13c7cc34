package fakeup

import (
	"encoding/json"
	"strings"
	"testing"
)

type sigResponse struct {
	Candidates []struct {
		Content struct {
			Parts []struct {
				InlineData       *struct{} `json:"inlineData"`
				ThoughtSignature string    `json:"thoughtSignature"`
			} `json:"parts"`
		} `json:"content"`
	} `json:"candidates"`
	ResponseID string `json:"responseId"`
}

func TestGeminiThoughtSignaturesOnImages(t *testing.T) {
	s := startT(t, Options{Kind: Gemini, Key: testKey})
	s.SetImages(2)
	a := do(t, "POST", genURL(s), genBody, googKey(testKey))
	if strings.Contains(string(a.body), "thoughtSignature") {
		t.Fatal("signatures sent while off")
	}
	s.SetThoughtSignatures(true)
	var ids []string
	for range 2 {
		a = do(t, "POST", genURL(s), genBody, googKey(testKey))
		var r sigResponse
		if err := json.Unmarshal(a.body, &r); err != nil {
			t.Fatal(err)
		}
		var sigs []string
		for _, p := range r.Candidates[0].Content.Parts {
			if (p.InlineData != nil) != (p.ThoughtSignature != "") {
				t.Fatalf("signature on a part that is not an image, or image without one: %s", clipS(string(a.body)))
			}
			if p.ThoughtSignature != "" {
				sigs = append(sigs, p.ThoughtSignature)
			}
		}
		want := []string{ThoughtSignature(r.ResponseID, 0), ThoughtSignature(r.ResponseID, 1)}
		if strings.Join(sigs, ",") != strings.Join(want, ",") || strings.Join(s.LastSignatures(), ",") != strings.Join(want, ",") {
			t.Fatalf("signatures %q, last %q, want %q", sigs, s.LastSignatures(), want)
		}
		ids = append(ids, r.ResponseID)
	}
	if ids[0] == ids[1] || ThoughtSignature(ids[0], 0) == ThoughtSignature(ids[1], 0) {
		t.Fatal("two answers share their signatures")
	}
	// The stream carries them on its image events too.
	a = do(t, "POST", streamURL(s), genBody, googKey(testKey))
	if n := strings.Count(string(a.body), `"thoughtSignature": "`); n != 2 {
		t.Fatalf("%d signatures in the stream", n)
	}
}

func TestParseGeminiRequestReadsSignatures(t *testing.T) {
	body := string(Fixture("gemini/request_second_turn_with_signature.json"))
	req, err := ParseGeminiRequest([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if got := req.Contents[1].Parts[0].ThoughtSignature; got != "Cr8BAY89a1+fake+signature+bytes+for+tests+only+Qm9vaw==" {
		t.Fatalf("signature %q", got)
	}
	bad := strings.Replace(body, "Cr8BAY89a1+fake", "not base64!", 1)
	if _, err := ParseGeminiRequest([]byte(bad)); err == nil || !strings.Contains(err.Error(), "thought_signature") {
		t.Fatalf("a signature that is not base64 passed: %v", err)
	}
}
