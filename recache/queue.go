package recache

import (
	"container/heap"
	"time"

	"github.com/prismproxy/prism/cachestore"
)

// item is one queued key. While dispatched (inflight) it stays in the
// scheduler's map but in no heap; requests for it that arrive meanwhile are
// folded into pend/pendDue and applied when the render finishes.
type item struct {
	key      cachestore.Key
	prio     Priority
	due      time.Time
	seq      uint64 // FIFO order among equal due times
	attempts int
	index    int // position in its heap, -1 when in none

	inflight  bool
	forgotten bool      // Forget while in flight: do not retry
	pend      Priority  // 0: nothing pending
	pendDue   time.Time // due time of the pending request

	warms    []*warmSet // Warm calls waiting for this key
	warmOnly bool       // queued by Warm alone: nothing else asked for it since

	claim *Claim // claimed from Options.Shared: the cluster's, not journaled here
}

// journaled reports whether the journal holds a live add record for it: it is
// (or will be, once its render finishes) in a high or normal queue.
func (it *item) journaled() bool {
	return it.claim == nil && it.prio.durable() || it.pend.durable()
}

// dueHeap orders items by due time, then arrival.
type dueHeap []*item

func (h dueHeap) Len() int { return len(h) }
func (h dueHeap) Less(i, j int) bool {
	if !h[i].due.Equal(h[j].due) {
		return h[i].due.Before(h[j].due)
	}
	return h[i].seq < h[j].seq
}
func (h dueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *dueHeap) Push(x any) {
	it := x.(*item)
	it.index = len(*h)
	*h = append(*h, it)
}
func (h *dueHeap) Pop() any {
	old := *h
	n := len(old)
	it := old[n-1]
	old[n-1] = nil
	it.index = -1
	*h = old[:n-1]
	return it
}

// countDue counts the items due at or before now, visiting only those (and
// their direct children): the heap property prunes every later subtree.
func (h dueHeap) countDue(now time.Time) int {
	if len(h) == 0 {
		return 0
	}
	n := 0
	stack := []int{0}
	for len(stack) > 0 {
		i := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if h[i].due.After(now) {
			continue
		}
		n++
		if l := 2*i + 1; l < len(h) {
			stack = append(stack, l)
		}
		if r := 2*i + 2; r < len(h) {
			stack = append(stack, r)
		}
	}
	return n
}

// hostQueues are one host's three queues, indexed by Priority-1.
type hostQueues struct {
	q [numPriorities]dueHeap
}

func (hq *hostQueues) push(it *item) { heap.Push(&hq.q[it.prio.index()], it) }

func (hq *hostQueues) remove(it *item) {
	if it.index >= 0 {
		heap.Remove(&hq.q[it.prio.index()], it.index)
	}
}

func (hq *hostQueues) fix(it *item) { heap.Fix(&hq.q[it.prio.index()], it.index) }

// popDue removes and returns the earliest item of level i when it is due.
func (hq *hostQueues) popDue(i int, now time.Time) *item {
	h := &hq.q[i]
	if len(*h) == 0 || (*h)[0].due.After(now) {
		return nil
	}
	return heap.Pop(h).(*item)
}
