package status

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Actions are rate-limited twice: per client address, before anything else
// (so that guessing tokens is slow, and one client cannot crowd out the
// others), and for the whole unit once the client has proved who it is (so
// that a runaway script cannot keep the unit busy, while strangers cannot
// spend the operators' share).

// rates are the buckets' sizes and refill times.
type rates struct {
	clientBurst int
	clientEvery time.Duration // one more request per client this often
	globalBurst int
	globalEvery time.Duration
}

var defaultRates = rates{clientBurst: 10, clientEvery: time.Second, globalBurst: 30, globalEvery: 200 * time.Millisecond}

// maxClients bounds the per-client buckets kept; a full bucket is the same
// as none, so those go first when the table fills.
const maxClients = 1024

// bucket is a token bucket: at holds tokens as of the monotonic instant at.
type bucket struct {
	tokens float64
	at     time.Duration
}

// take takes one token if there is one, and otherwise says how long until
// there is.
func (b *bucket) take(now time.Duration, burst int, every time.Duration) (time.Duration, bool) {
	b.fill(now, burst, every)
	if b.tokens >= 1 {
		b.tokens--
		return 0, true
	}
	return time.Duration((1 - b.tokens) * float64(every)), false
}

func (b *bucket) fill(now time.Duration, burst int, every time.Duration) {
	if now > b.at {
		b.tokens = math.Min(float64(burst), b.tokens+float64(now-b.at)/float64(every))
		b.at = now
	}
}

type limiter struct {
	r   rates
	now func() time.Duration // monotonic

	mu      sync.Mutex
	clients map[string]*bucket
	global  *bucket
}

func newLimiter(r rates, now func() time.Duration) *limiter {
	t := now()
	return &limiter{r: r, now: now, clients: map[string]*bucket{},
		global: &bucket{tokens: float64(r.globalBurst), at: t}}
}

// client takes one request from addr's bucket.
func (l *limiter) client(addr string) *refusal {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b := l.clients[addr]
	if b == nil {
		if len(l.clients) >= maxClients {
			l.pruneLocked(now)
		}
		if len(l.clients) >= maxClients {
			return tooMany("too many clients are acting at once", l.r.clientEvery)
		}
		b = &bucket{tokens: float64(l.r.clientBurst), at: now}
		l.clients[addr] = b
	}
	if wait, ok := b.take(now, l.r.clientBurst, l.r.clientEvery); !ok {
		return tooMany("too many requests from "+addr, wait)
	}
	return nil
}

// unit takes one request from the whole unit's bucket.
func (l *limiter) unit() *refusal {
	l.mu.Lock()
	defer l.mu.Unlock()
	if wait, ok := l.global.take(l.now(), l.r.globalBurst, l.r.globalEvery); !ok {
		return tooMany("too many actions on this unit", wait)
	}
	return nil
}

func (l *limiter) pruneLocked(now time.Duration) {
	for addr, b := range l.clients {
		b.fill(now, l.r.clientBurst, l.r.clientEvery)
		if b.tokens >= float64(l.r.clientBurst) {
			delete(l.clients, addr)
		}
	}
}

// tooMany is a 429 with how long to wait, rounded up to whole seconds as
// Retry-After counts them.
func tooMany(what string, wait time.Duration) *refusal {
	secs := max(int(math.Ceil(wait.Seconds())), 1)
	return &refusal{code: http.StatusTooManyRequests, msg: fmt.Sprintf("%s; try again in %d s", what, secs), retryAfter: strconv.Itoa(secs)}
}
