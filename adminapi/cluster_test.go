package adminapi

import (
	"context"
	"net/http"
	"reflect"
	"sync"
	"testing"

	"github.com/prismproxy/prism/cachestore"
	"github.com/prismproxy/prism/cluster"
)

// fakeCluster records the purges handed to the cluster.
type fakeCluster struct {
	mu     sync.Mutex
	purges []cluster.Purge
	res    cluster.PurgeResult
}

func (c *fakeCluster) Info(context.Context) cluster.Info {
	return cluster.Info{NodeID: "a", LiveNodes: []string{"a", "b"}, RedisReachable: true, PurgeLagSeconds: 0.5}
}

func (c *fakeCluster) Purge(_ context.Context, p cluster.Purge) cluster.PurgeResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.purges = append(c.purges, p)
	return c.res
}

func TestPurgeReachesTheCluster(t *testing.T) {
	c := &fakeCluster{res: cluster.PurgeResult{Applied: 3, Live: 3}}
	e := newEnv(t, func(o *Options, _ *env) { o.Cluster = c })
	k1 := e.put(1, 1, "/a")
	e.put(1, 1, "/blog/x")

	code, body := e.do("POST", "/purge/url", `{"url":"https://example.com/a"}`)
	want := map[string]any{"purged": true, "nodes_applied": 3.0, "nodes_live": 3.0, "pending": false}
	if got := decode(t, body); code != http.StatusOK || !reflect.DeepEqual(got, want) {
		t.Fatalf("/purge/url = %d %v, want 200 %v", code, got, want)
	}
	code, body = e.do("POST", "/purge/pattern", `{"pattern":"https://example.com/blog/*"}`)
	if got := decode(t, body); code != http.StatusOK || got["purged_count"] != 1.0 || got["nodes_applied"] != 3.0 {
		t.Fatalf("/purge/pattern = %d %v", code, got)
	}
	// Redis unreachable: applied here, delivered later, and the answer says so.
	c.res = cluster.PurgeResult{Applied: 1, Live: 1, Pending: true}
	code, body = e.do("POST", "/purge/all", "")
	if got := decode(t, body); code != http.StatusAccepted || got["pending"] != true {
		t.Fatalf("/purge/all with Redis down = %d %v, want 202 pending", code, got)
	}

	k2 := cachestore.Key{HostID: 1, DimensionID: 2, URL: "/a"} // every dimension of the URL
	wantPurges := []cluster.Purge{
		{Keys: []cachestore.Key{k1, k2}},
		{Glob: "/blog/*", HostID: 1},
		{All: true},
	}
	if !reflect.DeepEqual(c.purges, wantPurges) {
		t.Fatalf("purges handed to the cluster %+v, want %+v", c.purges, wantPurges)
	}
}

func TestStatusHasAClusterBlock(t *testing.T) {
	e := newEnv(t, func(o *Options, _ *env) { o.Cluster = &fakeCluster{} })
	code, body := e.do("GET", "/status", "")
	got := decode(t, body)
	want := map[string]any{"node_id": "a", "live_nodes": []any{"a", "b"}, "redis_reachable": true,
		"purge_lag_seconds": 0.5, "pending_purges": 0.0}
	if code != http.StatusOK || !reflect.DeepEqual(got["cluster"], want) || got["cache"] == nil {
		t.Fatalf("/status = %d %v, want a cluster block %v beside this node's figures", code, got, want)
	}
	// A single node has none.
	_, body = newEnv(t).do("GET", "/status", "")
	if _, ok := decode(t, body)["cluster"]; ok {
		t.Fatal("a single node's /status has a cluster block")
	}
}
