package proxy

import (
	"bytes"
	"encoding/base64"
	"io"
	"net/http"
	"strings"
	"testing"

	"nanogate/internal/fakeup"
)

// TestImagesAPIOneImageIsForwarded: one 1.5 MB image asked of the Images
// API goes out as it arrives (chunked, no Content-Length), as the same
// answer n=1 gave when read whole: the upstream's PNG as b64_json and the
// GPT image usage; with response_format url the image is stored on the
// way and its link serves it. The request is logged and billed once.
func TestImagesAPIOneImageIsForwarded(t *testing.T) {
	ts := startServer(t, serverOpts{kind: fakeup.Gemini})
	ts.up.SetImageSize(1500 << 10)
	r := ts.postJSON(t, "/v1/images/generations", ciKey, `{"prompt":"a nano banana"}`, "x-request-id", "img-fwd")
	if r.status != 200 {
		t.Fatalf("%d %.300s", r.status, r.body)
	}
	if r.header.Get("Content-Length") != "" || r.header.Get("x-nanogate-provider") != "up" {
		t.Errorf("headers %v: the answer was not forwarded", r.header)
	}
	var a imagesAnswer
	decode(t, r, &a)
	if a.Created == 0 || len(a.Data) != 1 || a.Data[0].B64JSON == nil || a.Data[0].URL != nil {
		t.Fatalf("answer %.300s", r.body)
	}
	raw, err := base64.StdEncoding.DecodeString(*a.Data[0].B64JSON)
	if err != nil || !bytes.Equal(raw, fakeup.PNG(1500<<10)) {
		t.Errorf("the image is not the upstream's PNG (%v)", err)
	}
	if u := a.Usage; u.OutputTokens != fakeup.ImageTokens || u.TotalTokens != u.InputTokens+u.OutputTokens {
		t.Errorf("usage %+v", u)
	}
	l := ts.requestLine(t, "img-fwd")
	if l["route"] != "images" || l["status"] != int64(200) || l["images"] != int64(1) {
		t.Errorf("log line %v", l)
	}
	if u := ts.usageOf(t, ciKey); u.Key.Requests != 1 || u.Key.Images != 1 {
		t.Errorf("usage %+v", u.Key)
	}

	r = ts.postJSON(t, "/v1/images/generations", ciKey, `{"prompt":"a nano banana","response_format":"url"}`)
	if r.status != 200 {
		t.Fatalf("url: %d %.300s", r.status, r.body)
	}
	a = imagesAnswer{}
	decode(t, r, &a)
	if len(a.Data) != 1 || a.Data[0].URL == nil || a.Data[0].B64JSON != nil {
		t.Fatalf("url answer %.300s", r.body)
	}
	if img := send(t, "GET", *a.Data[0].URL, "", "", nil); img.status != 200 || !bytes.Equal(img.body, fakeup.PNG(1500<<10)) {
		t.Errorf("GET link: %d, %d bytes", img.status, len(img.body))
	}
}

// TestImagesAPICutAfterCommitFailsClearly: an image cut half-way after the
// answer was committed leaves the client a body its parser refuses, and
// bills nothing.
func TestImagesAPICutAfterCommitFailsClearly(t *testing.T) {
	ts := startServer(t, serverOpts{kind: fakeup.Gemini})
	ts.up.SetImageSize(1500 << 10)
	ts.up.SetFault(fakeup.Fault{DropMidBody: true, Times: 1})
	req, err := http.NewRequest("POST", ts.url+"/v1/images/generations", strings.NewReader(`{"prompt":"a nano banana"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+ciKey)
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || err == nil || !bytes.Contains(body, []byte(`"b64_json":"iVBOR`)) {
		t.Fatalf("status %d, read error %v, body %.120q (%d bytes)", resp.StatusCode, err, body, len(body))
	}
	if u := ts.usageOf(t, ciKey); u.Key.Images != 0 || u.Key.CostUSD != 0 || u.Key.Failed != 1 {
		t.Errorf("usage %+v", u.Key)
	}
}
