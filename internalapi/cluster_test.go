package internalapi

import (
	"context"
	"reflect"
	"sync"
	"testing"

	"github.com/prismproxy/prism/cachestore"
	"github.com/prismproxy/prism/cluster"
)

type fakeCluster struct {
	mu     sync.Mutex
	purges []cluster.Purge
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
