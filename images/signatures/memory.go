package signatures

import (
	"container/list"
	"context"
	"sync"
	"time"
)

// DefaultMemoryBytes bounds a Memory store made with a size of 0: about ten
// thousand signatures of Google's usual size.
const DefaultMemoryBytes = 32 << 20

// entryOverhead is what an entry costs besides its key and signature (list
// element, map slot, expiry), counted so that many tiny entries are bounded
// too.
const entryOverhead = 128

// Memory is the Store of a single replica: a map with least-recently-used
// eviction once its entries hold more than its size in bytes. It is safe
// for concurrent use.
type Memory struct {
	mu    sync.Mutex
	max   int
	used  int
	items map[Key]*list.Element
	lru   list.List // front: most recently used
}

type memEntry struct {
	key     Key
	sig     []byte
	expires time.Time
}

// NewMemory returns a Memory store holding at most maxBytes (0: the
// default).
func NewMemory(maxBytes int) *Memory {
	if maxBytes <= 0 {
		maxBytes = DefaultMemoryBytes
	}
	return &Memory{max: maxBytes, items: make(map[Key]*list.Element)}
}

func (e *memEntry) size() int { return len(e.key) + len(e.sig) + entryOverhead }

// Put implements Store.
func (m *Memory) Put(_ context.Context, keys []Key, sig []byte, ttl time.Duration) error {
	if len(sig) > MaxSignatureBytes {
		return ErrTooLarge
	}
	if ttl <= 0 || len(sig) == 0 {
		return nil
	}
	expires := time.Now().Add(ttl)
	own := append([]byte(nil), sig...) // shared by the keys: never modified
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range keys {
		if el, ok := m.items[k]; ok {
			m.remove(el)
		}
		e := &memEntry{key: k, sig: own, expires: expires}
		m.items[k] = m.lru.PushFront(e)
		m.used += e.size()
	}
	for m.used > m.max && m.lru.Len() > 0 {
		m.remove(m.lru.Back())
	}
	return nil
}

// Get implements Store.
func (m *Memory) Get(_ context.Context, keys []Key) ([][]byte, error) {
	out := make([][]byte, len(keys))
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, k := range keys {
		el, ok := m.items[k]
		if !ok {
			continue
		}
		e := el.Value.(*memEntry)
		if !now.Before(e.expires) {
			m.remove(el)
			continue
		}
		m.lru.MoveToFront(el)
		out[i] = e.sig
	}
	return out, nil
}

// Len returns the number of entries held, expired ones included until they
// are looked up or evicted.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lru.Len()
}

func (m *Memory) remove(el *list.Element) {
	e := m.lru.Remove(el).(*memEntry)
	delete(m.items, e.key)
	m.used -= e.size()
}
