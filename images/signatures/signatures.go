// Package signatures keeps the thought signatures Google's image models put
// on the images they draw, so that the gateway can send each one back when a
// client returns that image in a later turn. Clients never see signatures and
// only echo the content they got, so a signature is found by the image
// itself: the SHA-256 of its decoded bytes, or the id of the link the gateway
// issued for it.
//
// Two stores implement Store: Redis, shared by replicas, and Memory, bounded
// in bytes with the least recently used entries dropped first. Signatures
// are opaque model state: they are never logged.
package signatures

import (
	"context"
	"encoding/hex"
	"errors"
	"time"
)

// Key names an image in a Store. Build one with DigestKey or LinkKey.
type Key string

// DigestKey is the key of an image by the SHA-256 of its decoded bytes.
func DigestKey(d [32]byte) Key { return Key("d:" + hex.EncodeToString(d[:])) }

// LinkKey is the key of an image by the id of the link the gateway issued
// for it (images.offload).
func LinkKey(id string) Key { return Key("l:" + id) }

// MaxSignatureBytes bounds one signature. Google's are a few hundred bytes to
// a few KiB of base64; anything far larger is not kept, so that one hostile
// answer cannot fill the store.
const MaxSignatureBytes = 64 << 10

// ErrTooLarge: a signature over MaxSignatureBytes, which is not kept.
var ErrTooLarge = errors.New("signatures: signature too large")

// Store keeps signatures by image.
type Store interface {
	// Put keeps sig (base64, as Google sends it) under every key for ttl.
	// The store copies sig.
	Put(ctx context.Context, keys []Key, sig []byte, ttl time.Duration) error
	// Get returns the signature kept under each key, nil where there is
	// none, in the order of keys.
	Get(ctx context.Context, keys []Key) ([][]byte, error)
}
