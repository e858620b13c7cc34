package config

import "testing"

func TestLinkStoreUsesS3WhenConfigured(t *testing.T) {
	cfg, err := parseForTest(t, "images:\n  offload:\n    store: s3\n    s3: { endpoint: 127.0.0.1:9000, bucket: img }\n")
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.LinkStore(); got.Store != "s3" || got.S3.Bucket != "img" {
		t.Fatalf("offload off with s3 configured: links from %q", got.Store)
	}
	cfg, err = parseForTest(t, "images:\n  offload:\n    store: s3\n    s3: { endpoint: \"\", bucket: img }\n")
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.LinkStore(); got.Store != "filesystem" {
		t.Fatalf("s3 without an endpoint: links from %q, want the filesystem store", got.Store)
	}
	cfg, err = parseForTest(t, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.LinkStore(); got.Store != "filesystem" || got.Dir == "" {
		t.Fatalf("default: links from %q in %q", got.Store, got.Dir)
	}
}
