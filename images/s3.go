package images

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"

	"nanogate/config"
)

// maxPresign is the longest validity S3 allows a presigned URL (SigV4).
const maxPresign = 7 * 24 * time.Hour

// linkTimeout bounds presigning. Presigning is local once the bucket's
// region is known (configured, or learnt by the first Put); it only reaches
// the network to look the region up.
const linkTimeout = 5 * time.Second

// S3 is the store of an S3-compatible bucket, through minio-go (SigV4,
// presigning). Objects are named by their id at the top of the bucket; links
// are presigned GET URLs valid for the ttl, which the bucket serves itself.
//
// The store deletes nothing: give the bucket a lifecycle rule that expires
// objects some time after the ttl.
type S3 struct {
	c            *minio.Client
	bucket       string
	ttl          time.Duration
	cacheControl string
}

// NewS3 returns the store of cfg's bucket, whose links are valid for ttl
// (1s to 7 days: S3's limits for presigned URLs). It makes no request: a
// wrong endpoint, bucket or key shows in the first Put's error.
//
// cfg.Endpoint is host[:port]; an http:// or https:// prefix is accepted and
// then decides TLS instead of cfg.UseSSL. With access_key and secret_key
// empty, credentials come from the environment (AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY, or MINIO_ROOT_USER and MINIO_ROOT_PASSWORD) or from
// the instance's IAM role.
func NewS3(cfg config.S3, ttl time.Duration) (*S3, error) {
	if ttl < time.Second || ttl > maxPresign {
		return nil, fmt.Errorf("images: s3 store: ttl %v must be between 1s and 168h (S3's limit for presigned URLs)", ttl)
	}
	if cfg.Bucket == "" {
		return nil, errors.New("images: s3 store: no bucket")
	}
	endpoint, secure := cfg.Endpoint, cfg.UseSSL
	if rest, ok := cutPrefixFold(endpoint, "https://"); ok {
		endpoint, secure = rest, true
	} else if rest, ok := cutPrefixFold(endpoint, "http://"); ok {
		endpoint, secure = rest, false
	}
	endpoint = strings.TrimRight(endpoint, "/")
	if endpoint == "" {
		return nil, errors.New("images: s3 store: no endpoint")
	}
	var creds *credentials.Credentials
	switch {
	case cfg.AccessKey != "" && cfg.SecretKey != "":
		creds = credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, "")
	case cfg.AccessKey != "" || cfg.SecretKey != "":
		return nil, errors.New("images: s3 store: access_key and secret_key must be set together")
	default:
		creds = credentials.NewChainCredentials([]credentials.Provider{
			&credentials.EnvAWS{}, &credentials.EnvMinio{}, &credentials.IAM{},
		})
	}
	c, err := minio.New(endpoint, &minio.Options{
		Creds:  creds,
		Secure: secure,
		Region: cfg.Region,
		// No retries inside the client: a failed Put falls back to inline
		// base64 at once (the decoding reader could not be replayed anyway),
		// and a Get fails the request that sent the link.
		MaxRetries: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("images: s3 store: endpoint %q: %w", endpoint, err)
	}
	return &S3{
		c:            c,
		bucket:       cfg.Bucket,
		ttl:          ttl,
		cacheControl: "private, max-age=" + strconv.FormatInt(int64(ttl/time.Second), 10) + ", immutable",
	}, nil
}

// Client returns the minio client (for tests and tools: creating the
// bucket, listing).
func (s *S3) Client() *minio.Client { return s.c }

// Bucket returns the store's bucket.
func (s *S3) Bucket() string { return s.bucket }

// Put uploads the image in one PUT of exactly size bytes, streamed from r
// (over plain HTTP each chunk is signed as it goes; over TLS the payload is
// sent unsigned), with its Content-Type and a Cache-Control for the ttl.
func (s *S3) Put(ctx context.Context, id, mime string, r io.Reader, size int64) error {
	if !ValidID(id) {
		return ErrBadID
	}
	if mime == "" {
		mime = mimeOfID(id)
	}
	src := &sourceReader{r: r}
	_, err := s.c.PutObject(ctx, s.bucket, id, src, size, minio.PutObjectOptions{
		ContentType:  mime,
		CacheControl: s.cacheControl,
		// One PUT whatever the size: multipart would buffer whole parts.
		DisableMultipart: true,
	})
	if err == nil {
		return nil
	}
	if src.err != nil || (src.eof && src.n != size) {
		// The image itself was bad (malformed base64 half-way, fewer bytes
		// than announced), not the server: it is up and may have kept the
		// truncated body of an unsigned-payload PUT (over TLS), so remove
		// it. Nobody has its link, but it should not sit in the bucket. A
		// server that failed or timed out gets no second request.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), linkTimeout)
		s.c.RemoveObject(rctx, s.bucket, id, minio.RemoveObjectOptions{})
		cancel()
	}
	return fmt.Errorf("images: s3 put %s/%s: %w", s.bucket, id, err)
}

// sourceReader records how much of the image was read and whether reading
// it failed, to tell a bad image from a failing server.
type sourceReader struct {
	r   io.Reader
	n   int64
	eof bool
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.n += int64(n)
	if err == io.EOF {
		s.eof = true
	} else if err != nil {
		s.err = err
	}
	return n, err
}

// Link presigns a GET of the object, valid for the ttl.
func (s *S3) Link(id, mime string) (string, error) {
	if !ValidID(id) {
		return "", ErrBadID
	}
	ctx, cancel := context.WithTimeout(context.Background(), linkTimeout)
	defer cancel()
	u, err := s.c.PresignedGetObject(ctx, s.bucket, id, s.ttl, nil)
	if err != nil {
		return "", fmt.Errorf("images: s3 presign %s/%s: %w", s.bucket, id, err)
	}
	return u.String(), nil
}

// Get opens the object through the API (a signed GET, not the link).
func (s *S3) Get(ctx context.Context, id string) (io.ReadCloser, string, int64, error) {
	if !ValidID(id) {
		return nil, "", 0, ErrBadID
	}
	obj, err := s.c.GetObject(ctx, s.bucket, id, minio.GetObjectOptions{})
	if err == nil {
		var info minio.ObjectInfo
		if info, err = obj.Stat(); err == nil {
			return obj, info.ContentType, info.Size, nil
		}
		obj.Close()
	}
	if resp := minio.ToErrorResponse(err); resp.Code == "NoSuchKey" || resp.StatusCode == 404 {
		return nil, "", 0, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return nil, "", 0, fmt.Errorf("images: s3 get %s/%s: %w", s.bucket, id, err)
}

// ParseLink accepts presigned GET URLs of this store's bucket (path style
// /bucket/<id>, or virtual-host style bucket.host/<id>) whose SigV4
// signature is valid for this store's credentials, and that have not
// expired. The signature is checked here, with the secret key, so a URL that
// merely looks like one of ours is refused without any request.
func (s *S3) ParseLink(ctx context.Context, link string) (string, error) {
	u, err := url.Parse(link)
	if err != nil || u.User != nil || (u.Scheme != "https" && u.Scheme != "http") || u.RawPath != "" {
		return "", ErrNotLink
	}
	id, pathStyle := strings.CutPrefix(u.Path, "/"+s.bucket+"/")
	if !pathStyle {
		if !hasPrefixFold(u.Host, s.bucket+".") {
			return "", ErrNotLink
		}
		id = strings.TrimPrefix(u.Path, "/")
	}
	if !ValidID(id) {
		return "", ErrNotLink
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil || q.Get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256" || q.Get("X-Amz-SignedHeaders") != "host" {
		return "", ErrNotLink
	}
	// Credential: <access key>/<yyyymmdd>/<region>/s3/aws4_request
	cred := strings.Split(q.Get("X-Amz-Credential"), "/")
	if len(cred) != 5 || cred[3] != "s3" || cred[4] != "aws4_request" {
		return "", ErrNotLink
	}
	signed, err := time.Parse("20060102T150405Z", q.Get("X-Amz-Date"))
	if err != nil || signed.Format("20060102") != cred[1] {
		return "", ErrNotLink
	}
	expires, err := strconv.ParseInt(q.Get("X-Amz-Expires"), 10, 64)
	if err != nil || expires < 1 || expires > int64(maxPresign/time.Second) {
		return "", ErrNotLink
	}
	sig, err := hex.DecodeString(q.Get("X-Amz-Signature"))
	if err != nil || len(sig) != sha256.Size {
		return "", ErrNotLink
	}
	keys, err := s.c.GetCreds()
	if err != nil {
		return "", fmt.Errorf("images: s3 credentials: %w", err)
	}
	if keys.AccessKeyID == "" || keys.SecretAccessKey == "" || cred[0] != keys.AccessKeyID {
		return "", ErrNotLink
	}

	// The SigV4 canonical request of a presigned GET, as minio-go (and
	// every S3 server) builds it: the query without the signature, sorted
	// and encoded, the one signed header, an unsigned payload.
	q.Del("X-Amz-Signature")
	canonical := "GET\n" + s3utils.EncodePath(u.Path) + "\n" + strings.ReplaceAll(q.Encode(), "+", "%20") + "\n" +
		"host:" + u.Host + "\n\nhost\nUNSIGNED-PAYLOAD"
	scope := cred[1] + "/" + cred[2] + "/s3/aws4_request"
	digest := sha256.Sum256([]byte(canonical))
	toSign := "AWS4-HMAC-SHA256\n" + q.Get("X-Amz-Date") + "\n" + scope + "\n" + hex.EncodeToString(digest[:])
	key := hmacSHA256([]byte("AWS4"+keys.SecretAccessKey), cred[1])
	key = hmacSHA256(key, cred[2])
	key = hmacSHA256(key, "s3")
	key = hmacSHA256(key, "aws4_request")
	if subtle.ConstantTimeCompare(hmacSHA256(key, toSign), sig) != 1 {
		return "", ErrNotLink
	}
	if !time.Now().Before(signed.Add(time.Duration(expires) * time.Second)) {
		return "", ErrExpired
	}
	return id, nil
}

func hmacSHA256(key []byte, msg string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(msg))
	return h.Sum(nil)
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if hasPrefixFold(s, prefix) {
		return s[len(prefix):], true
	}
	return s, false
}
