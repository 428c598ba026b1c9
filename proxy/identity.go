package proxy

import (
	"container/list"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/prismproxy/prism/cachestore"
)

// identityCache keeps decompressed copies of recently served entries for
// clients that do not accept gzip, so such a hit costs a copy, not an
// inflate of the whole page (profiling showed inflating to be 70% of the
// CPU of an identity hit). It is keyed by the *Entry: entries are immutable
// and a new render is a new Entry, so a stale copy is never served. It is
// bounded in bytes (the decompressed body plus the Entry's own body, which
// the cache keeps alive), least recently used out first.
//
// It is safe for concurrent use.
type identityCache struct {
	max     int64 // total budget; <= 0: the cache is off
	itemMax int64 // largest decompressed body kept

	mu    sync.Mutex
	size  int64
	ll    list.List // of *identityItem, most recently used first
	items map[*cachestore.Entry]*list.Element
}

type identityItem struct {
	e    *cachestore.Entry
	body []byte
	cost int64
}

func newIdentityCache(max int64) *identityCache {
	return &identityCache{max: max, itemMax: max / 8, items: make(map[*cachestore.Entry]*list.Element)}
}

// get returns e's decompressed body if it is cached.
func (c *identityCache) get(e *cachestore.Entry) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[e]
	if !ok {
		return nil, false
	}
	c.ll.MoveToFront(el)
	return el.Value.(*identityItem).body, true
}

// add caches body as e's decompressed body, evicting the least recently used
// entries beyond the budget.
func (c *identityCache) add(e *cachestore.Entry, body []byte) {
	cost := int64(len(body) + len(e.Body) + entryOverhead)
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.items[e]; ok {
		return
	}
	c.items[e] = c.ll.PushFront(&identityItem{e: e, body: body, cost: cost})
	c.size += cost
	for c.size > c.max {
		old := c.ll.Back()
		it := old.Value.(*identityItem)
		c.ll.Remove(old)
		delete(c.items, it.e)
		c.size -= it.cost
	}
}

// entryOverhead approximates an item's bookkeeping bytes.
const entryOverhead = 128

var errGzipSize = errors.New("decompressed size differs from the gzip trailer")

// identityBody returns e's body decompressed, from the identity cache when it
// can. It returns nil and no error when the body is too large to keep (the
// caller streams it instead).
func (p *Proxy) identityBody(e *cachestore.Entry) ([]byte, error) {
	if p.ident.max <= 0 {
		return nil, nil
	}
	n, ok := gzipSize(e.Body)
	if !ok {
		return nil, errors.New("not a gzip body")
	}
	if int64(n) > p.ident.itemMax {
		return nil, nil
	}
	if b, ok := p.ident.get(e); ok {
		return b, nil
	}
	g, _ := p.gzReaders.Get().(*gzipReader)
	if g == nil {
		g = new(gzipReader)
	}
	defer p.gzReaders.Put(g)
	g.br.Reset(e.Body)
	if err := g.zr.Reset(&g.br); err != nil {
		return nil, err
	}
	g.zr.Multistream(false)
	body := make([]byte, n)
	if _, err := io.ReadFull(&g.zr, body); err != nil {
		return nil, fmt.Errorf("%w: %w", errGzipSize, err)
	}
	// The stream must end exactly here, with a valid checksum.
	var one [1]byte
	if m, err := g.zr.Read(one[:]); m != 0 || err != io.EOF {
		if err == nil || err == io.EOF {
			err = errGzipSize
		}
		return nil, err
	}
	p.ident.add(e, body)
	return body, nil
}
