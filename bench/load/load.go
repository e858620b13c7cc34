// Package load is the load generator of the benchmark harness (bench/run): it
// sends one prepared HTTP/1.1 request over and over on keep-alive connections
// and measures latency and throughput.
//
// Two shapes of load, because they answer different questions:
//
//   - Fixed is open-loop on one connection: requests are due on a fixed
//     schedule, and a request due while the previous answer is still coming
//     is measured from the time it was due, not from the time it went out. A
//     slow answer therefore shows in the latencies of the requests it held
//     up too, as it would for real clients that do not wait for each other
//     (no coordinated omission).
//   - Closed is closed-loop on c connections, each sending its next request
//     as soon as the previous answer is read: the throughput of the system at
//     concurrency c.
//
// The client is a minimal HTTP/1.1 reader written for the purpose (a status
// line, Content-Length or chunked bodies, discarded as they arrive): on a
// 2-core machine the load generator shares the CPUs with what it measures, and
// net/http's client would spend more per request than the gateway does.
package load

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Request is one prepared request: where to connect and the bytes to send.
type Request struct {
	Addr string // host:port
	Raw  []byte // request line, headers and body, ready for the wire
}

// NewPost prepares a POST of body to rawURL with the given extra headers
// ("Name: value" strings). The connection is kept alive.
func NewPost(rawURL string, body []byte, headers ...string) (Request, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return Request{}, err
	}
	if u.Scheme != "http" {
		return Request{}, fmt.Errorf("load: %s: only http:// is supported", rawURL)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n",
		u.RequestURI(), u.Host, len(body))
	for _, h := range headers {
		b.WriteString(h)
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	b.Write(body)
	return Request{Addr: u.Host, Raw: b.Bytes()}, nil
}

// Result is what one measured phase saw.
type Result struct {
	// Lat holds the latency of every measured successful request, sorted.
	Lat []time.Duration
	// Lag is, for Fixed, how late each request went out after it was due
	// (sorted): the generator's own timing error plus the queueing behind
	// slow answers.
	Lag []time.Duration
	OK  int // 2xx answers completed inside the measured window
	// Total counts every answer, warm-up included: the denominator of CPU
	// time measured around the whole run.
	Total  int
	Errors int   // transport errors (each followed by a new connection)
	Bad    int   // non-2xx answers
	Bytes  int64 // body bytes of the measured answers
	Dur    time.Duration
	// FirstErr is the first transport error or bad status seen, for the
	// report.
	FirstErr string
	// Status counts the measured non-2xx answers by status.
	Status map[int]int
}

// RPS is the measured throughput in successful requests per second.
func (r *Result) RPS() float64 {
	if r.Dur <= 0 {
		return 0
	}
	return float64(r.OK) / r.Dur.Seconds()
}

// Pct returns the p-th quantile (0..1) of the latencies, 0 when none.
func (r *Result) Pct(p float64) time.Duration { return Quantile(r.Lat, p) }

// Quantile returns the p-th quantile (0..1) of sorted durations, 0 when none.
func Quantile(s []time.Duration, p float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	i := int(float64(len(s))*p+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// Conn is one keep-alive client connection.
type Conn struct {
	addr string
	nc   net.Conn
	br   *bufio.Reader
}

// Dial opens a connection to addr.
func Dial(addr string) (*Conn, error) {
	c := &Conn{addr: addr}
	return c, c.redial()
}

func (c *Conn) redial() error {
	if c.nc != nil {
		c.nc.Close()
	}
	nc, err := net.DialTimeout("tcp", c.addr, 5*time.Second)
	if err != nil {
		c.nc = nil
		return err
	}
	c.nc = nc
	if c.br == nil {
		c.br = bufio.NewReaderSize(nc, 64<<10)
	} else {
		c.br.Reset(nc)
	}
	return nil
}

// Close closes the connection.
func (c *Conn) Close() {
	if c.nc != nil {
		c.nc.Close()
	}
}

// Do sends raw and reads the whole answer. The body is discarded unless sink
// is not nil. It returns the status and the body length. After an error the
// connection is replaced, so the next Do starts clean.
func (c *Conn) Do(raw []byte, sink *bytes.Buffer) (status int, n int64, err error) {
	if c.nc == nil {
		if err := c.redial(); err != nil {
			return 0, 0, err
		}
	}
	c.nc.SetDeadline(time.Now().Add(time.Minute))
	if _, err = c.nc.Write(raw); err == nil {
		var keep bool
		status, n, keep, err = readResponse(c.br, sink)
		if err == nil && !keep {
			err = c.redial()
		}
	}
	if err != nil {
		c.nc.Close()
		c.nc = nil
	}
	return status, n, err
}

var errMalformed = errors.New("load: malformed HTTP response")

// readResponse reads one HTTP/1.1 response and reports whether the
// connection may be reused.
func readResponse(br *bufio.Reader, sink *bytes.Buffer) (status int, n int64, keep bool, err error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, 0, false, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, 0, false, errMalformed
	}
	status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, 0, false, errMalformed
	}
	keep = line[7] == '1'
	cl, chunked := int64(-1), false
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			return status, 0, false, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		name, val, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return status, 0, false, errMalformed
		}
		val = bytes.TrimSpace(val)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if cl, err = strconv.ParseInt(string(val), 10, 64); err != nil || cl < 0 {
				return status, 0, false, errMalformed
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(val, []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			if bytes.EqualFold(val, []byte("close")) {
				keep = false
			}
		}
	}
	switch {
	case chunked:
		n, err = readChunked(br, sink)
	case cl >= 0:
		n, err = body(br, cl, sink)
	default: // until the server closes
		keep = false
		var w io.Writer = io.Discard
		if sink != nil {
			w = sink
		}
		n, err = io.Copy(w, br)
	}
	return status, n, keep && err == nil, err
}

func body(br *bufio.Reader, n int64, sink *bytes.Buffer) (int64, error) {
	if sink != nil {
		return io.CopyN(sink, br, n)
	}
	d, err := br.Discard(int(n))
	return int64(d), err
}

func readChunked(br *bufio.Reader, sink *bytes.Buffer) (int64, error) {
	var total int64
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return total, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		size, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 64)
		if err != nil || size < 0 {
			return total, errMalformed
		}
		if size == 0 {
			for { // trailers, then the empty line
				line, err = br.ReadSlice('\n')
				if err != nil {
					return total, err
				}
				if len(bytes.TrimRight(line, "\r\n")) == 0 {
					return total, nil
				}
			}
		}
		m, err := body(br, size, sink)
		total += m
		if err != nil {
			return total, err
		}
		if _, err := br.Discard(2); err != nil { // CRLF after the data
			return total, err
		}
	}
}

// Fetch sends req once on a new connection and returns the status and body.
func Fetch(req Request) (int, []byte, error) {
	c, err := Dial(req.Addr)
	if err != nil {
		return 0, nil, err
	}
	defer c.Close()
	var b bytes.Buffer
	st, _, err := c.Do(req.Raw, &b)
	return st, b.Bytes(), err
}

// Fixed sends req on one connection at rate requests per second: warm-up
// first (not measured), then dur measured. A request due while the connection
// was still busy with an earlier answer is measured from its due time; one due
// while the connection was free, from the time it went out: the generator's
// own lateness (sleeps overshoot by up to a millisecond on some VMs, where
// timers are that coarse) is not the server's, and is reported in Lag only.
func Fixed(req Request, rate float64, warmup, dur time.Duration) Result {
	c, err := Dial(req.Addr)
	if err != nil {
		return Result{Errors: 1, FirstErr: err.Error()}
	}
	defer c.Close()
	return fixed(rate, warmup, dur, func() (int, int64, error) { return c.Do(req.Raw, nil) })
}

// FixedPing is Fixed for a Redis server: PING round trips on one
// connection at rate, the floor of any request that asks Redis once.
func FixedPing(addr string, rate float64, warmup, dur time.Duration) Result {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return Result{Errors: 1, FirstErr: err.Error()}
	}
	defer nc.Close()
	br := bufio.NewReader(nc)
	ping := []byte("PING\r\n")
	return fixed(rate, warmup, dur, func() (int, int64, error) {
		if _, err := nc.Write(ping); err != nil {
			return 0, 0, err
		}
		line, err := br.ReadSlice('\n')
		if err != nil {
			return 0, 0, err
		}
		if !bytes.HasPrefix(line, []byte("+PONG")) {
			return 0, 0, fmt.Errorf("redis answered %q to PING", line)
		}
		return 200, int64(len(line)), nil
	})
}

// fixed runs do at rate for warmup (not measured) and then dur; Fixed
// says how each call is measured.
func fixed(rate float64, warmup, dur time.Duration, do func() (int, int64, error)) Result {
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now().Add(10 * time.Millisecond)
	from, end := start.Add(warmup), start.Add(warmup+dur)
	r := Result{Dur: dur}
	n := int(dur.Seconds()*rate) + 16
	r.Lat, r.Lag = make([]time.Duration, 0, n), make([]time.Duration, 0, n)
	var free time.Time // when the previous answer ended
	for i := 0; ; i++ {
		due := start.Add(time.Duration(i) * interval)
		if !due.Before(end) {
			break
		}
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		out := time.Now()
		measureFrom := out
		if free.After(due) {
			measureFrom = due // held up by the previous answer: that wait counts
		}
		st, nb, err := do()
		done := time.Now()
		free = done
		r.Total++
		if due.Before(from) {
			continue
		}
		r.record(st, nb, err, done.Sub(measureFrom))
		r.Lag = append(r.Lag, out.Sub(due))
	}
	slices.Sort(r.Lat)
	slices.Sort(r.Lag)
	return r
}

func (r *Result) record(status int, n int64, err error, lat time.Duration) {
	switch {
	case err != nil:
		r.Errors++
		if r.FirstErr == "" {
			r.FirstErr = err.Error()
		}
	case status < 200 || status > 299:
		r.Bad++
		if r.Status == nil {
			r.Status = map[int]int{}
		}
		r.Status[status]++
		if r.FirstErr == "" {
			r.FirstErr = "status " + strconv.Itoa(status)
		}
	default:
		r.OK++
		r.Bytes += n
		r.Lat = append(r.Lat, lat)
	}
}

// Closed runs conns connections, each sending req again as soon as its
// previous answer is read, for warmup (not measured) and then dur. A request
// counts when it both started and ended inside the measured window.
func Closed(req Request, conns int, warmup, dur time.Duration) Result {
	return closed(req, conns, warmup, dur, 0)
}

// ClosedBackoff is Closed with clients that, like the OpenAI SDKs, wait
// backoff after a 503 or 429 before sending again, instead of hammering a
// gateway that asked them to wait. Result.Status counts the non-2xx answers
// by status.
func ClosedBackoff(req Request, conns int, warmup, dur, backoff time.Duration) Result {
	return closed(req, conns, warmup, dur, backoff)
}

// waitUntil sleeps until t, or end if that is sooner: a backoff never
// holds a client past the end of its run.
func waitUntil(t, end time.Time) {
	if end.Before(t) {
		t = end
	}
	time.Sleep(time.Until(t))
}

func closed(req Request, conns int, warmup, dur, backoff time.Duration) Result {
	cs := make([]*Conn, conns)
	var wg sync.WaitGroup
	errs := make([]error, conns)
	for i := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cs[i], errs[i] = Dial(req.Addr)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			for _, c := range cs {
				if c != nil {
					c.Close()
				}
			}
			return Result{Errors: 1, FirstErr: err.Error()}
		}
	}
	start := time.Now()
	from, end := start.Add(warmup), start.Add(warmup+dur)
	parts := make([]Result, conns)
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			r := &parts[i]
			r.Lat = make([]time.Duration, 0, 1024)
			for {
				t0 := time.Now()
				if !t0.Before(end) {
					return
				}
				st, nb, err := c.Do(req.Raw, nil)
				t1 := time.Now()
				r.Total++
				if t0.Before(from) || t1.After(end) {
					if err != nil {
						time.Sleep(time.Millisecond) // no hot loop on a dead server
					} else if backoff > 0 && (st == 503 || st == 429) {
						waitUntil(t1.Add(backoff), end)
					}
					continue
				}
				r.record(st, nb, err, t1.Sub(t0))
				if backoff > 0 && (st == 503 || st == 429) {
					waitUntil(t1.Add(backoff), end)
				}
			}
		}()
	}
	wg.Wait()
	out := Result{Dur: dur}
	for i := range parts {
		p := &parts[i]
		out.Lat = append(out.Lat, p.Lat...)
		out.OK += p.OK
		out.Total += p.Total
		out.Errors += p.Errors
		out.Bad += p.Bad
		for st, n := range p.Status {
			if out.Status == nil {
				out.Status = map[int]int{}
			}
			out.Status[st] += n
		}
		out.Bytes += p.Bytes
		if out.FirstErr == "" {
			out.FirstErr = p.FirstErr
		}
	}
	slices.Sort(out.Lat)
	return out
}
