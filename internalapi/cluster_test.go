package internalapi

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"sync"
	"testing"

	"github.com/prismproxy/prism/cachestore"
	"github.com/prismproxy/prism/cluster"
	"github.com/prismproxy/prism/prerender"
)

type fakeCluster struct {
	mu     sync.Mutex
	purges []cluster.Purge
	status cluster.Status
	err    error // from Status
}

func (c *fakeCluster) Status(context.Context) (cluster.Status, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status, c.err
}

func (c *fakeCluster) Purge(_ context.Context, p cluster.Purge) cluster.PurgeResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.purges = append(c.purges, p)
	return cluster.PurgeResult{Applied: 2, Live: 2}
}

func TestInvalidateReachesTheCluster(t *testing.T) {
	c := &fakeCluster{}
	e := newEnv(t, false, func(o *Options) { o.Cluster = c })
	r := e.post(t, "/internal/cache/invalidate", `{"host_id":2,"urls":["/x"],"dimension_ids":[]}`)
	// The answer's fields stay the spec's.
	want := map[string]any{"status": "ok", "data": map[string]any{
		"host_id": 2.0, "urls_count": 1.0, "dimension_ids_count": 1.0, "entries_invalidated": 0.0}}
	if r.code != 200 || !reflect.DeepEqual(r.body, want) {
		t.Fatalf("status %d body %s, want %v", r.code, r.raw, want)
	}
	wantPurges := []cluster.Purge{{Keys: []cachestore.Key{{HostID: 2, DimensionID: 5, URL: "/x"}}}}
	if !reflect.DeepEqual(c.purges, wantPurges) {
		t.Fatalf("purges handed to the cluster %+v, want %+v", c.purges, wantPurges)
	}
}

// TestStatusIsClusterWide: in cluster mode /status reports the shared
// queues and the live nodes' tabs, keeps the spec's fields, and falls back
// to this node's figures (saying so) when Redis does not answer.
func TestStatusIsClusterWide(t *testing.T) {
	c := &fakeCluster{status: cluster.Status{
		Nodes: []string{"a", "b"}, Claimed: 2, InternalQueue: 3, QueueMax: 2000,
		Capacity: prerender.Capacity{Tabs: 8, Free: 6, ReservedForOnline: 2, AvailableForRecache: 4},
		Queues: map[int][3]cluster.QueueCount{
			1: {{Total: 4, DueNow: 1}, {Total: 5, DueNow: 2}, {Total: 6, DueNow: 3}},
			9: {{Total: 1}}, // a host this node does not have
		},
	}}
	e := newEnv(t, false, func(o *Options) { o.Cluster = c })
	r := e.do(t, http.MethodGet, "/status", "", nil)
	if r.code != 200 {
		t.Fatalf("status %d: %s", r.code, r.raw)
	}
	want := map[string]any{
		"internal_queue": map[string]any{"size": 3.0, "max_size": 2000.0, "capacity_used_percent": 0.15},
		"rs_capacity": map[string]any{"total_free_tabs": 6.0, "reserved_for_online": 2.0,
			"available_for_recache": 4.0, "reservation_percent": 50.0},
		"queues": map[string]any{
			"1": map[string]any{"high": map[string]any{"total": 4.0, "due_now": 1.0},
				"normal":      map[string]any{"total": 5.0, "due_now": 2.0},
				"autorecache": map[string]any{"total": 6.0, "due_now": 3.0}},
			"2": map[string]any{"high": map[string]any{"total": 0.0, "due_now": 0.0},
				"normal":      map[string]any{"total": 0.0, "due_now": 0.0},
				"autorecache": map[string]any{"total": 0.0, "due_now": 0.0}},
		},
		"cluster": map[string]any{"redis_reachable": true, "live_nodes": []any{"a", "b"}, "paused": false, "claimed": 2.0},
	}
	for k, v := range want {
		if !reflect.DeepEqual(r.body[k], v) {
			t.Errorf("%s = %v, want %v", k, r.body[k], v)
		}
	}

	c.mu.Lock()
	c.err = errors.New("redis down")
	c.mu.Unlock()
	r = e.do(t, http.MethodGet, "/status", "", nil)
	if got := r.body["rs_capacity"].(map[string]any)["total_free_tabs"]; got != 10.0 {
		t.Errorf("with Redis down total_free_tabs = %v, want this node's 10", got)
	}
	if got := r.body["cluster"]; !reflect.DeepEqual(got, map[string]any{"redis_reachable": false, "live_nodes": []any{}, "paused": false, "claimed": 0.0}) {
		t.Errorf("with Redis down cluster = %v", got)
	}
}
