package images

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// FSConfig configures a filesystem store.
type FSConfig struct {
	// Dir holds the images; it is created when missing.
	Dir string
	// PublicURL is the base of links (config.Server.PublicURL): links are
	// PublicURL + "/images/<id>?exp=&sig=".
	PublicURL string
	// SigningKey signs links (HMAC-SHA256); at least MinSigningKey bytes.
	SigningKey string
	// TTL is how long a link stays valid and a file is kept.
	TTL time.Duration
	// SweepInterval is how often files older than TTL are deleted:
	// min(TTL/4, 10m) when 0; negative: no background sweeper (call Sweep).
	SweepInterval time.Duration
}

// MinSigningKey is the shortest signing key accepted: 256 bits, as strong as
// HMAC-SHA256's output. Config validation enforces the same.
const MinSigningKey = 32

// staleTemp is the age past which a temporary file is a leftover of a write
// that never finished (a crash); no Put lasts anywhere near this long.
const staleTemp = time.Hour

// tmpPrefix starts the names of files being written. It cannot start an id,
// so the handler never serves a partial image.
const tmpPrefix = ".tmp-"

// FS is the filesystem store: images are files in one directory, named by
// their id, written atomically (temporary file, fsync, rename), served by
// Handler through signed expiring links and deleted by a sweeper once older
// than the ttl.
//
// Every access goes through an os.Root opened on the directory, so even a
// name that slipped past id validation could not reach outside it.
type FS struct {
	root   *os.Root
	dir    string
	ttl    time.Duration
	log    *zap.Logger
	key    []byte
	macs   sync.Pool // of hash.Hash (HMAC-SHA256 with key)
	scheme string    // of PublicURL, lower case
	host   string    // of PublicURL, lower case
	// linkPath is the path of PublicURL + "/images/"; linkBase the whole
	// URL up to the id.
	linkPath, linkBase string

	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once

	served, notModified, denied, swept atomic.Uint64
	// lookups counts handler requests that reached the disk; a test checks
	// that malformed ids never do.
	lookups atomic.Uint64
}

// NewFS opens (creating it if needed) the store's directory and, unless
// cfg.SweepInterval is negative, starts its sweeper: Close stops it.
func NewFS(cfg FSConfig, logger *zap.Logger) (*FS, error) {
	if logger == nil {
		logger = zap.NewNop()
	}
	if len(cfg.SigningKey) < MinSigningKey {
		// Never the key itself in the message.
		return nil, fmt.Errorf("images: filesystem store: the signing key must be at least %d bytes (it has %d)",
			MinSigningKey, len(cfg.SigningKey))
	}
	if cfg.TTL < time.Second {
		return nil, fmt.Errorf("images: filesystem store: ttl %v is under a second", cfg.TTL)
	}
	if cfg.Dir == "" {
		return nil, errors.New("images: filesystem store: no directory")
	}
	pub, err := url.Parse(cfg.PublicURL)
	if err != nil || (pub.Scheme != "http" && pub.Scheme != "https") || pub.Host == "" || pub.User != nil ||
		pub.RawQuery != "" || pub.Fragment != "" {
		return nil, fmt.Errorf("images: filesystem store: public URL %q is not an http(s) base URL", cfg.PublicURL)
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("images: filesystem store: %w", err)
	}
	root, err := os.OpenRoot(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("images: filesystem store: %w", err)
	}
	f := &FS{
		root:     root,
		dir:      cfg.Dir,
		ttl:      cfg.TTL,
		log:      logger,
		key:      []byte(cfg.SigningKey),
		scheme:   strings.ToLower(pub.Scheme),
		host:     strings.ToLower(pub.Host),
		linkPath: strings.TrimRight(pub.Path, "/") + "/images/",
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	f.linkBase = f.scheme + "://" + pub.Host + f.linkPath
	f.macs.New = func() any { return hmac.New(sha256.New, f.key) }

	interval := cfg.SweepInterval
	if interval == 0 {
		interval = min(cfg.TTL/4, 10*time.Minute)
	}
	if interval > 0 {
		go f.sweepLoop(interval)
	} else {
		close(f.done)
	}
	return f, nil
}

// Dir returns the store's directory.
func (f *FS) Dir() string { return f.dir }

// Close stops the sweeper and waits for it, then closes the directory.
func (f *FS) Close() error {
	f.stopOnce.Do(func() { close(f.stop) })
	<-f.done
	return f.root.Close()
}

// copyBufs are the buffers Put copies through (64 KiB: 24 writes for a
// 1.5 MB image).
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// Put writes the image to a temporary file in the directory, syncs it and
// renames it to id, so that a reader sees the whole image or nothing.
func (f *FS) Put(ctx context.Context, id, mime string, r io.Reader, size int64) (err error) {
	if !ValidID(id) {
		return ErrBadID
	}
	tmp := tmpName()
	file, err := f.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return fmt.Errorf("images: filesystem put %s: %w", id, err)
	}
	defer func() {
		if err != nil {
			file.Close()
			f.root.Remove(tmp)
		}
	}()

	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("images: filesystem put %s: %w", id, err)
		}
		m, rerr := io.ReadFull(r, buf)
		if m > 0 {
			if n+int64(m) > size {
				return fmt.Errorf("images: filesystem put %s: the image has more than the %d bytes announced", id, size)
			}
			if _, err := file.Write(buf[:m]); err != nil {
				return fmt.Errorf("images: filesystem put %s: %w", id, err)
			}
			n += int64(m)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("images: filesystem put %s: reading the image: %w", id, rerr)
		}
	}
	if n != size {
		return fmt.Errorf("images: filesystem put %s: the image has %d bytes, %d announced", id, n, size)
	}
	if err := file.Sync(); err != nil {
		return fmt.Errorf("images: filesystem put %s: %w", id, err)
	}
	if err := file.Close(); err != nil {
		return fmt.Errorf("images: filesystem put %s: %w", id, err)
	}
	// The directory is not synced: after a crash, the worst is a link that
	// answers 404, for an answer the crash most likely cut off anyway.
	if err := f.root.Rename(tmp, id); err != nil {
		return fmt.Errorf("images: filesystem put %s: %w", id, err)
	}
	return nil
}

// spool implements spooler: a temporary file of the directory, as Put's.
func (f *FS) spool() (*os.File, error) {
	return f.root.OpenFile(tmpName(), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
}

// keep implements spooler as Put ends: sync, then rename into place.
func (f *FS) keep(ctx context.Context, file *os.File, id, _ string, _ int64) error {
	if !ValidID(id) {
		return ErrBadID
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("images: filesystem put %s: %w", id, err)
	}
	if err := file.Sync(); err != nil {
		return fmt.Errorf("images: filesystem put %s: %w", id, err)
	}
	if err := f.root.Rename(filepath.Base(file.Name()), id); err != nil {
		return fmt.Errorf("images: filesystem put %s: %w", id, err)
	}
	return nil
}

// discard implements spooler.
func (f *FS) discard(file *os.File, kept bool) {
	file.Close()
	if !kept {
		f.root.Remove(filepath.Base(file.Name()))
	}
}

func tmpName() string {
	var raw [8]byte
	rand.Read(raw[:])
	return tmpPrefix + hex.EncodeToString(raw[:])
}

// Get opens the image stored under id.
func (f *FS) Get(ctx context.Context, id string) (io.ReadCloser, string, int64, error) {
	mime := mimeOfID(id)
	if mime == "" {
		return nil, "", 0, ErrBadID
	}
	file, err := f.root.Open(id)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "", 0, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, "", 0, fmt.Errorf("images: filesystem get %s: %w", id, err)
	}
	st, err := file.Stat()
	if err != nil {
		file.Close()
		return nil, "", 0, fmt.Errorf("images: filesystem get %s: %w", id, err)
	}
	return file, mime, st.Size(), nil
}

// Link returns PublicURL/images/<id>?exp=<unix seconds>&sig=<HMAC>, valid
// for the ttl from now.
func (f *FS) Link(id, mime string) (string, error) {
	if !ValidID(id) {
		return "", ErrBadID
	}
	exp := time.Now().Add(f.ttl).Unix()
	b := make([]byte, 0, len(f.linkBase)+len(id)+len("?exp=&sig=")+20+sigLen)
	b = append(b, f.linkBase...)
	b = append(b, id...)
	b = append(b, "?exp="...)
	b = strconv.AppendInt(b, exp, 10)
	b = append(b, "&sig="...)
	b = f.appendSig(b, id, exp)
	return string(b), nil
}

// sigLen is the length of a link's signature: HMAC-SHA256, unpadded
// base64url.
const sigLen = 43

// sigEncoding rejects non-canonical encodings, so that no two signature
// strings stand for the same MAC (a "changed" signature that still passes).
var sigEncoding = base64.RawURLEncoding.Strict()

// appendSig appends the signature of (id, exp).
func (f *FS) appendSig(dst []byte, id string, exp int64) []byte {
	var sum [sha256.Size]byte
	mac(f, &sum, id, exp)
	return sigEncoding.AppendEncode(dst, sum[:])
}

// mac computes the MAC of a link. The message says what it signs, so a MAC
// made with the same key for anything else never passes for a link.
func mac[T ~string | ~[]byte](f *FS, sum *[sha256.Size]byte, id T, exp int64) {
	var msg [64]byte
	m := append(msg[:0], "nanogate image link\n"...)
	m = append(m, id...)
	m = append(m, '\n')
	m = strconv.AppendInt(m, exp, 10)
	h := f.macs.Get().(hash.Hash)
	h.Reset()
	h.Write(m)
	h.Sum(sum[:0])
	f.macs.Put(h)
}

// verify checks a link's exp and sig query values for id (already
// validated): ErrNotLink when the signature is missing or wrong (whatever was
// altered), ErrExpired when it is right but exp has passed. It returns exp.
func verify[T ~string | ~[]byte](f *FS, id, expArg, sigArg T) (int64, error) {
	if len(expArg) == 0 || len(expArg) > 18 || len(sigArg) != sigLen {
		return 0, ErrNotLink
	}
	var exp int64
	for i := 0; i < len(expArg); i++ {
		c := expArg[i]
		if c < '0' || c > '9' {
			return 0, ErrNotLink
		}
		exp = exp*10 + int64(c-'0')
	}
	var got [sha256.Size + 2]byte
	n, err := sigEncoding.Decode(got[:], []byte(sigArg))
	if err != nil || n != sha256.Size {
		return 0, ErrNotLink
	}
	var want [sha256.Size]byte
	mac(f, &want, id, exp)
	if !hmac.Equal(got[:n], want[:]) {
		return 0, ErrNotLink
	}
	if time.Now().Unix() >= exp {
		return 0, ErrExpired
	}
	return exp, nil
}

// ParseLink accepts exactly the links Link makes: the same scheme, host and
// path (case aside in scheme and host), an id of the right form and a valid,
// unexpired signature.
func (f *FS) ParseLink(ctx context.Context, link string) (string, error) {
	u, err := url.Parse(link)
	if err != nil || u.User != nil || !strings.EqualFold(u.Scheme, f.scheme) || !strings.EqualFold(u.Host, f.host) {
		return "", ErrNotLink
	}
	id, found := strings.CutPrefix(u.Path, f.linkPath)
	if !found || !ValidID(id) || u.RawPath != "" {
		return "", ErrNotLink
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return "", ErrNotLink
	}
	if _, err := verify(f, id, q.Get("exp"), q.Get("sig")); err != nil {
		return "", err
	}
	return id, nil
}

func (f *FS) sweepLoop(interval time.Duration) {
	defer close(f.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-f.stop:
			return
		case <-t.C:
			f.Sweep()
		}
	}
}

// Sweep deletes the images older than the ttl (by modification time: images
// are written once) and temporary files left by writes that never finished.
// Other files are left alone. It returns how many files it deleted.
func (f *FS) Sweep() int {
	now := time.Now()
	imageCutoff, tmpCutoff := now.Add(-f.ttl), now.Add(-staleTemp)
	d, err := f.root.Open(".")
	if err != nil {
		f.log.Warn("image sweep", zap.String("dir", f.dir), zap.Error(err))
		return 0
	}
	defer d.Close()
	deleted := 0
	for {
		entries, err := d.ReadDir(256)
		for _, e := range entries {
			name := e.Name()
			cutoff := imageCutoff
			if strings.HasPrefix(name, tmpPrefix) {
				cutoff = tmpCutoff
			} else if !ValidID(name) {
				continue
			}
			if !e.Type().IsRegular() {
				continue
			}
			info, err := e.Info()
			if err != nil || !info.ModTime().Before(cutoff) {
				continue // gone already, or still young
			}
			if err := f.root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
				f.log.Warn("image sweep", zap.String("dir", f.dir), zap.Error(err))
				continue
			}
			deleted++
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			f.log.Warn("image sweep", zap.String("dir", f.dir), zap.Error(err))
			break
		}
	}
	f.swept.Add(uint64(deleted))
	if deleted > 0 {
		f.log.Debug("image sweep", zap.String("dir", f.dir), zap.Int("deleted", deleted))
	}
	return deleted
}
