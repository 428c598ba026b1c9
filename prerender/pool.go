package prerender

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// errRetired means the pool's browser is being recycled: the caller should
// retry on the current browser.
var errRetired = errors.New("prerender: browser recycled")

// reservation splits free tabs into those held back for online renders
// (ceil(free*pct/100)) and those a recache render may take.
func reservation(free, pct int) (reserved, available int) {
	if free <= 0 {
		return 0, 0
	}
	pct = min(max(pct, 0), 100)
	reserved = (free*pct + 99) / 100
	return reserved, free - reserved
}

// slot is one tab of a pool; its tab is opened when the browser starts
// (warmTabs), dropped when it breaks and then opened by the next render.
type slot struct {
	tab *tab
}

// pool is a context-aware semaphore over one browser's tabs, with capacity
// classes. It is safe for concurrent use.
type pool struct {
	pct int

	mu      sync.Mutex
	slots   []*slot // free slots
	waiters []chan *slot
	inUse   int
	closed  error         // non-nil: no more acquisitions
	idle    chan struct{} // closed once closed != nil and inUse == 0
}

func newPool(tabs, pct int) *pool {
	p := &pool{pct: pct, idle: make(chan struct{})}
	for range tabs {
		p.slots = append(p.slots, &slot{})
	}
	return p
}

func (p *pool) free() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed != nil {
		return 0
	}
	return len(p.slots)
}

// acquire takes a slot for class c. Recache gets ErrNoCapacity at once when
// the online reservation leaves nothing; Online waits until ctx is done.
func (p *pool) acquire(ctx context.Context, c Class) (*slot, error) {
	p.mu.Lock()
	if p.closed != nil {
		p.mu.Unlock()
		return nil, p.closed
	}
	free := len(p.slots)
	if c == Recache {
		if _, avail := reservation(free, p.pct); avail == 0 {
			p.mu.Unlock()
			return nil, ErrNoCapacity
		}
	}
	if free > 0 {
		s := p.slots[free-1]
		p.slots = p.slots[:free-1]
		p.inUse++
		p.mu.Unlock()
		return s, nil
	}
	ch := make(chan *slot, 1)
	p.waiters = append(p.waiters, ch)
	p.mu.Unlock()

	select {
	case s := <-ch:
		if s == nil {
			return nil, p.closedErr()
		}
		return s, nil
	case <-ctx.Done():
		p.mu.Lock()
		for i, w := range p.waiters {
			if w == ch {
				p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
				break
			}
		}
		p.mu.Unlock()
		select {
		case s := <-ch: // handed a slot while giving up: pass it on
			if s != nil {
				p.release(s)
			}
		default:
		}
		return nil, fmt.Errorf("%w: %w", ErrNoCapacity, ctx.Err())
	}
}

func (p *pool) closedErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// release returns s, handing it to the oldest waiter if there is one.
func (p *pool) release(s *slot) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed == nil && len(p.waiters) > 0 {
		w := p.waiters[0]
		p.waiters = p.waiters[1:]
		w <- s
		return
	}
	p.inUse--
	p.slots = append(p.slots, s)
	if p.closed != nil && p.inUse == 0 {
		close(p.idle)
	}
}

// close stops acquisitions with err and wakes every waiter. It returns the
// slots that are free now; slots in use come back through release.
func (p *pool) close(err error) []*slot {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed != nil {
		return nil
	}
	p.closed = err
	for _, w := range p.waiters {
		w <- nil
	}
	p.waiters = nil
	if p.inUse == 0 {
		close(p.idle)
	}
	return p.slots
}
