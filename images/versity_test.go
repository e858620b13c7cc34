package images

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"nanogate/config"
	"nanogate/internal/poll"
)

const (
	vgwAccess = "nanogate-test-access"
	vgwSecret = "nanogate-test-secret-0123456789abcdef"
	vgwBucket = "nanogate-images"
	vgwRegion = "us-east-1"
)

// versity is one versitygw process (S3 over a posix directory) on a free
// loopback port.
type versity struct {
	Endpoint string // 127.0.0.1:port
	cmd      *exec.Cmd
	exited   chan struct{}
	log      *os.File
}

// versityBinary finds versitygw in <module root>/.tools/bin (where
// scripts/tools.sh installs it) or in PATH, or fails the test.
func versityBinary(t testing.TB) string {
	t.Helper()
	if dir, err := os.Getwd(); err == nil {
		for ; ; dir = filepath.Dir(dir) {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				p := filepath.Join(dir, ".tools", "bin", "versitygw")
				if _, err := os.Stat(p); err == nil {
					return p
				}
				break
			}
			if filepath.Dir(dir) == dir {
				break
			}
		}
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	t.Fatalf("versitygw (an S3 server the S3 store is tested against) is not in .tools/bin nor in PATH: " +
		"run the tests with `make test`, which installs it (scripts/tools.sh)")
	return ""
}

// startVersity runs versitygw with its posix backend on a temporary
// directory and creates the test bucket; the process is killed when the test
// ends.
func startVersity(t testing.TB) *versity {
	t.Helper()
	bin := versityBinary(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	for attempt := 0; ; attempt++ {
		v := &versity{Endpoint: net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))}
		var err error
		if v.log, err = os.Create(filepath.Join(dir, "versitygw.log")); err != nil {
			t.Fatal(err)
		}
		v.cmd = exec.Command(bin, "--port", v.Endpoint, "--region", vgwRegion, "--quiet", "posix", data)
		// The keys go in the environment, not in arguments any process
		// listing shows.
		v.cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+vgwAccess, "ROOT_SECRET_KEY="+vgwSecret)
		v.cmd.Stdout, v.cmd.Stderr = v.log, v.log
		if err := v.cmd.Start(); err != nil {
			t.Fatalf("start versitygw: %v", err)
		}
		v.exited = make(chan struct{})
		go func() { v.cmd.Wait(); close(v.exited) }()
		t.Cleanup(v.Kill)
		if v.waitReady() {
			v.makeBucket(t)
			return v
		}
		v.Kill()
		if attempt == 2 { // the free port was taken in between, three times?
			out, _ := os.ReadFile(v.log.Name())
			t.Fatalf("versitygw did not start on %s: %s", v.Endpoint, out)
		}
	}
}

// waitReady waits until the server accepts connections; false when it
// exited first (its port was taken) or did not start.
func (v *versity) waitReady() bool {
	exited := false
	return poll.Within(20*time.Second, func() bool {
		select {
		case <-v.exited:
			exited = true
			return true
		default:
		}
		c, err := net.DialTimeout("tcp", v.Endpoint, 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	}) && !exited
}

// Kill stops the server at once, as a crash would, and waits until it is
// gone.
func (v *versity) Kill() {
	v.cmd.Process.Kill()
	<-v.exited
}

func (v *versity) makeBucket(t testing.TB) {
	t.Helper()
	s := v.store(t, time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.Client().MakeBucket(ctx, vgwBucket, minio.MakeBucketOptions{Region: vgwRegion}); err != nil {
		t.Fatalf("create bucket: %v", err)
	}
}

// config is the offload config of this server's bucket.
func (v *versity) config() config.S3 {
	return config.S3{Endpoint: v.Endpoint, Region: vgwRegion, Bucket: vgwBucket,
		AccessKey: vgwAccess, SecretKey: vgwSecret, UseSSL: false}
}

func (v *versity) store(t testing.TB, ttl time.Duration) *S3 {
	t.Helper()
	s, err := NewS3(v.config(), ttl)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
