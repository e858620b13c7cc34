package jsonx

// ObjectEach calls fn for each member of the object span obj, in order.
//
// key is the member's name: the raw bytes between the quotes when they need no
// decoding (no escapes, valid UTF-8), else the decoded name in a new slice, so
// that only escaped keys allocate. value is the exact span of the member's
// value, without surrounding whitespace. Both alias obj unless said otherwise
// and must be copied to outlive it.
//
// A non-nil error from fn stops the walk and is returned as it is. Anything
// that is not one well-formed object (with whitespace around it) is an error;
// since obj is read once, front to back, fn may already have been called for
// the members before the point where that error is found.
func ObjectEach(obj []byte, fn func(key, value []byte) error) error {
	it, err := newIter(obj, '{')
	if err != nil {
		return err
	}
	for {
		rawKey, value, done, err := it.next()
		if err != nil || done {
			return err
		}
		key, err := StringBytes(nil, rawKey)
		if err != nil {
			return err
		}
		if err := fn(key, value); err != nil {
			return err
		}
	}
}

// ArrayEach calls fn with the index and exact span of each element of the
// array span arr, in order. Errors are as for ObjectEach.
func ArrayEach(arr []byte, fn func(i int, value []byte) error) error {
	it, err := newIter(arr, '[')
	if err != nil {
		return err
	}
	for n := 0; ; n++ {
		_, value, done, err := it.next()
		if err != nil || done {
			return err
		}
		if err := fn(n, value); err != nil {
			return err
		}
	}
}

// Get returns the span of the first member of object obj whose decoded name
// is key, or ok=false when there is none or obj is malformed.
//
// Get stops at the match: the members before it are checked as ObjectEach
// would, the bytes after it are not read at all, which is the point when a
// small member precedes a large image. Check the document with Valid (or
// SkipValue) once first where a truncated tail must be noticed.
func Get(obj []byte, key string) (value []byte, ok bool) {
	it, err := newIter(obj, '{')
	if err != nil {
		return nil, false
	}
	// Escaped keys are decoded here rather than in the heap; a key longer
	// than this only costs an allocation, never a wrong answer.
	var buf [64]byte
	for {
		rawKey, value, done, err := it.next()
		if err != nil || done {
			return nil, false
		}
		// The raw key is at least as long as the decoded one unless it holds
		// invalid UTF-8 (one byte becomes three), so most members are ruled
		// out without decoding.
		if len(rawKey)-2 < len(key) && !hasNonASCII(rawKey) {
			continue
		}
		name, err := StringBytes(buf[:0], rawKey)
		if err != nil {
			return nil, false
		}
		if string(name) == key {
			return value, true
		}
	}
}

// GetMany is Get for several keys in one walk of obj: out[i] is the span of
// the first member named keys[i], nil when there is none (or obj is
// malformed before it), as Get would return. It stops once every key was
// found. out must be as long as keys.
func GetMany(obj []byte, keys []string, out [][]byte) {
	clear(out)
	it, err := newIter(obj, '{')
	if err != nil {
		return
	}
	var buf [64]byte
	left := len(keys)
	for left > 0 {
		rawKey, value, done, err := it.next()
		if err != nil || done {
			return
		}
		name, err := StringBytes(buf[:0], rawKey)
		if err != nil {
			return
		}
		for i, k := range keys {
			if out[i] == nil && string(name) == k {
				out[i] = value
				left--
				break
			}
		}
	}
}

// Index returns the span of element i of the array arr, or ok=false when arr
// has fewer elements or is malformed. Like Get, it does not read past the
// element it returns.
func Index(arr []byte, i int) ([]byte, bool) {
	if i < 0 {
		return nil, false
	}
	it, err := newIter(arr, '[')
	if err != nil {
		return nil, false
	}
	for n := 0; ; n++ {
		_, value, done, err := it.next()
		if err != nil || done {
			return nil, false
		}
		if n == i {
			return value, true
		}
	}
}

// iter walks the members of an object or the elements of an array, one
// at a time, so that Get and Index can stop early without a callback (a
// callback would make their scratch buffers escape to the heap).
type iter struct {
	data  []byte
	i     int  // just past the opening bracket or the previous value
	first bool // no member has been read yet
	close byte // '}' or ']'
}

func newIter(data []byte, open byte) (iter, error) {
	i := SkipWS(data, 0)
	if i >= len(data) {
		return iter{}, errEnd(i)
	}
	if data[i] != open {
		if open == '{' {
			return iter{}, errChar(data, i, "looking for beginning of object")
		}
		return iter{}, errChar(data, i, "looking for beginning of array")
	}
	return iter{data: data, i: i + 1, first: true, close: open + 2}, nil
}

// next reads the next member. key is the span of the key's string literal,
// quotes included (nil for arrays). done is set, with a nil error, once the
// closing bracket has been read and only whitespace follows it.
func (it *iter) next() (key, value []byte, done bool, err error) {
	data := it.data
	i := SkipWS(data, it.i)
	if i >= len(data) {
		return nil, nil, false, errEnd(i)
	}
	switch {
	case data[i] == it.close:
		i = SkipWS(data, i+1)
		if i != len(data) {
			return nil, nil, false, errChar(data, i, "after top-level value")
		}
		return nil, nil, true, nil
	case it.first:
		it.first = false
	case data[i] != ',':
		if it.close == '}' {
			return nil, nil, false, errChar(data, i, "after object member")
		}
		return nil, nil, false, errChar(data, i, "after array element")
	default:
		i = SkipWS(data, i+1)
	}
	if it.close == '}' {
		start := i
		if i >= len(data) {
			return nil, nil, false, errEnd(i)
		}
		if data[i] != '"' {
			return nil, nil, false, errChar(data, i, "looking for object key")
		}
		if i, err = skipString(data, i); err != nil {
			return nil, nil, false, err
		}
		key = data[start:i:i]
		i = SkipWS(data, i)
		if i >= len(data) {
			return nil, nil, false, errEnd(i)
		}
		if data[i] != ':' {
			return nil, nil, false, errChar(data, i, "after object key")
		}
		i = SkipWS(data, i+1)
	}
	start := i
	if i, err = SkipValue(data, i); err != nil {
		return nil, nil, false, err
	}
	it.i = i
	return key, data[start:i:i], false, nil
}

func hasNonASCII(s []byte) bool {
	for _, c := range s {
		if c >= 0x80 {
			return true
		}
	}
	return false
}
