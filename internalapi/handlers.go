package internalapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/prismproxy/prism/cachestore"
	"github.com/prismproxy/prism/cluster"
	"github.com/prismproxy/prism/recache"
	"github.com/prismproxy/prism/site"
)

const (
	maxURLs   = 10000
	maxURLLen = 8 << 10 // one URL; longer ones are refused
)

// cacheRequest is the body of /internal/cache/recache and /invalidate.
// Unknown fields are refused: a misspelt "dimension_ids" must not silently
// mean every dimension.
type cacheRequest struct {
	HostID       *int     `json:"host_id"`
	URLs         []string `json:"urls"`
	DimensionIDs []int    `json:"dimension_ids"`
	Priority     *string  `json:"priority"`
}

// decode reads exactly one JSON object of at most s.maxBody bytes into v.
func (s *server) decode(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, s.maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			return errorf(http.StatusBadRequest, "request body larger than %d bytes", s.maxBody)
		case errors.Is(err, io.EOF):
			return errorf(http.StatusBadRequest, "invalid JSON: empty body")
		}
		return errorf(http.StatusBadRequest, "invalid JSON: %s", jsonMessage(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errorf(http.StatusBadRequest, "invalid JSON: unexpected data after the object")
	}
	return nil
}

// jsonMessage describes a decoding error without Go type names.
func jsonMessage(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field != "" {
			return fmt.Sprintf("field %q: wrong type (%s)", te.Field, te.Value)
		}
		return "the body must be a JSON object"
	}
	return err.Error()
}

// target is a validated request: the host, its normalized URLs (distinct,
// in request order) and the dimensions to apply.
type target struct {
	host *site.Host
	urls []string
	dims []int
	keys []cachestore.Key // urls x dims
}

// validate checks a request's host, urls and dimension_ids.
func (s *server) validate(req *cacheRequest) (*target, error) {
	if req.HostID == nil {
		return nil, errorf(http.StatusBadRequest, "host_id is required")
	}
	h, ok := s.opts.Sites.ByID(*req.HostID)
	if !ok {
		return nil, errorf(http.StatusBadRequest, "host %d not found", *req.HostID)
	}
	switch {
	case req.URLs == nil:
		return nil, errorf(http.StatusBadRequest, "urls is required")
	case len(req.URLs) == 0:
		return nil, errorf(http.StatusBadRequest, "urls must hold 1 to %d entries, got 0", maxURLs)
	case len(req.URLs) > maxURLs:
		return nil, errorf(http.StatusBadRequest, "urls must hold 1 to %d entries, got %d", maxURLs, len(req.URLs))
	}
	t := &target{host: h}
	seen := make(map[string]struct{}, len(req.URLs))
	for i, raw := range req.URLs {
		if len(raw) > maxURLLen {
			return nil, errorf(http.StatusBadRequest, "urls[%d]: longer than %d bytes", i, maxURLLen)
		}
		_, norm, err := s.opts.Sites.Resolve(raw, h)
		if err != nil {
			if errors.Is(err, site.ErrUnknownHost) {
				return nil, errorf(http.StatusBadRequest, "urls[%d]: %s is not on host %d (%s)", i, clip(raw), h.ID, h.Name)
			}
			return nil, errorf(http.StatusBadRequest, "urls[%d]: invalid URL %s", i, clip(raw))
		}
		if _, dup := seen[norm]; !dup {
			seen[norm] = struct{}{}
			t.urls = append(t.urls, norm)
		}
	}
	if len(req.DimensionIDs) == 0 {
		for _, d := range h.Dimensions {
			t.dims = append(t.dims, d.ID)
		}
	} else {
		dseen := map[int]bool{}
		for _, id := range req.DimensionIDs {
			if _, ok := h.Dimension(id); !ok {
				return nil, errorf(http.StatusBadRequest, "dimension %d not configured for host %d", id, h.ID)
			}
			if !dseen[id] {
				dseen[id] = true
				t.dims = append(t.dims, id)
			}
		}
	}
	t.keys = make([]cachestore.Key, 0, len(t.urls)*len(t.dims))
	for _, u := range t.urls {
		for _, d := range t.dims {
			t.keys = append(t.keys, cachestore.Key{HostID: h.ID, DimensionID: d, URL: u})
		}
	}
	return t, nil
}

// clip quotes a client-supplied string for an error message, shortened.
func clip(s string) string {
	const n = 200
	if len(s) > n {
		s = s[:n] + "..."
	}
	return strconv.Quote(s)
}

type okBody struct {
	Status string `json:"status"`
	Data   any    `json:"data,omitempty"`
	// Message is set by pause and resume.
	Message string `json:"message,omitempty"`
}

type recacheData struct {
	HostID            int    `json:"host_id"`
	URLsCount         int    `json:"urls_count"`
	DimensionIDsCount int    `json:"dimension_ids_count"`
	EntriesEnqueued   int    `json:"entries_enqueued"`
	Priority          string `json:"priority"`
}

func (s *server) recache(w http.ResponseWriter, r *http.Request) error {
	var req cacheRequest
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	t, err := s.validate(&req)
	if err != nil {
		return err
	}
	if req.Priority == nil {
		return errorf(http.StatusBadRequest, "priority is required")
	}
	p, err := recache.ParsePriority(*req.Priority)
	if err != nil || (p != recache.High && p != recache.Normal) {
		return errorf(http.StatusBadRequest, "invalid priority %s: want \"high\" or \"normal\"", clip(*req.Priority))
	}
	n, err := s.opts.Scheduler.Enqueue(t.keys, p)
	if err != nil {
		return fmt.Errorf("enqueue: %w", err)
	}
	s.log.Info("internalapi: recache queued", "host_id", t.host.ID, "urls", len(req.URLs),
		"dimensions", len(t.dims), "entries", n, "priority", p.String())
	writeJSON(w, http.StatusOK, okBody{Status: "ok", Data: recacheData{
		HostID: t.host.ID, URLsCount: len(req.URLs), DimensionIDsCount: len(t.dims),
		EntriesEnqueued: n, Priority: p.String(),
	}})
	return nil
}

type invalidateRequest struct {
	HostID       *int     `json:"host_id"`
	URLs         []string `json:"urls"`
	DimensionIDs []int    `json:"dimension_ids"`
}

type invalidateData struct {
	HostID             int `json:"host_id"`
	URLsCount          int `json:"urls_count"`
	DimensionIDsCount  int `json:"dimension_ids_count"`
	EntriesInvalidated int `json:"entries_invalidated"`
}

func (s *server) invalidate(w http.ResponseWriter, r *http.Request) error {
	var ir invalidateRequest
	if err := s.decode(w, r, &ir); err != nil {
		return err
	}
	t, err := s.validate(&cacheRequest{HostID: ir.HostID, URLs: ir.URLs, DimensionIDs: ir.DimensionIDs})
	if err != nil {
		return err
	}
	// Forget first, so a recache queued for these keys cannot store the
	// entry again right after it was deleted.
	s.opts.Scheduler.Forget(t.keys...)
	n := 0
	for _, k := range t.keys {
		if s.opts.Store.Delete(k) {
			n++
		}
	}
	if s.opts.Cluster != nil {
		// Every node drops them; the answer's fields stay the spec's.
		res := s.opts.Cluster.Purge(r.Context(), cluster.Purge{Keys: t.keys})
		s.log.Info("internalapi: invalidation delivered to the cluster", "nodes_applied", res.Applied,
			"nodes_live", res.Live, "pending", res.Pending)
	}
	s.log.Info("internalapi: entries invalidated", "host_id", t.host.ID, "urls", len(ir.URLs),
		"dimensions", len(t.dims), "invalidated", n)
	writeJSON(w, http.StatusOK, okBody{Status: "ok", Data: invalidateData{
		HostID: t.host.ID, URLsCount: len(ir.URLs), DimensionIDsCount: len(t.dims), EntriesInvalidated: n,
	}})
	return nil
}

type statusBody struct {
	Daemon        daemonStatus                    `json:"daemon"`
	InternalQueue internalQueueStatus             `json:"internal_queue"`
	RSCapacity    capacityStatus                  `json:"rs_capacity"`
	Queues        map[string]map[string]queueStat `json:"queues"`
	// Cluster is set in cluster mode (not in the spec): the figures above
	// are then cluster-wide when Redis answers, this node's when not.
	Cluster *clusterStatus `json:"cluster,omitempty"`
}

type clusterStatus struct {
	RedisReachable bool     `json:"redis_reachable"`
	LiveNodes      []string `json:"live_nodes"`
	Paused         bool     `json:"paused"`
	Claimed        int      `json:"claimed"` // shared entries rendering on some node
}

type daemonStatus struct {
	DaemonID      string  `json:"daemon_id"`
	UptimeSeconds int64   `json:"uptime_seconds"`
	LastTick      *string `json:"last_tick"` // null before the first tick
}

type internalQueueStatus struct {
	Size                int     `json:"size"`
	MaxSize             int     `json:"max_size"`
	CapacityUsedPercent float64 `json:"capacity_used_percent"`
}

type capacityStatus struct {
	TotalFreeTabs       int     `json:"total_free_tabs"`
	ReservedForOnline   int     `json:"reserved_for_online"`
	AvailableForRecache int     `json:"available_for_recache"`
	ReservationPercent  float64 `json:"reservation_percent"`
}

type queueStat struct {
	Total  int `json:"total"`
	DueNow int `json:"due_now"`
}

func (s *server) status(w http.ResponseWriter, r *http.Request) error {
	now := s.opts.Now()
	st := s.opts.Scheduler.Status()
	c := s.opts.Capacity()
	body := statusBody{
		Daemon: daemonStatus{
			DaemonID:      s.opts.DaemonID,
			UptimeSeconds: int64(max(now.Sub(s.opts.Start), 0) / time.Second),
		},
		InternalQueue: internalQueueStatus{Size: st.InternalQueue, MaxSize: st.InternalQueueMax},
		RSCapacity: capacityStatus{
			TotalFreeTabs:       c.Free,
			ReservedForOnline:   c.ReservedForOnline,
			AvailableForRecache: c.AvailableForRecache,
			ReservationPercent:  c.ReservationPercent,
		},
		Queues: make(map[string]map[string]queueStat, len(st.Hosts)),
	}
	if !st.LastTick.IsZero() {
		lt := st.LastTick.UTC().Format(time.RFC3339)
		body.Daemon.LastTick = &lt
	}
	for id, hs := range st.Hosts {
		body.Queues[strconv.Itoa(id)] = map[string]queueStat{
			"high":        {hs.High.Total, hs.High.DueNow},
			"normal":      {hs.Normal.Total, hs.Normal.DueNow},
			"autorecache": {hs.Auto.Total, hs.Auto.DueNow},
		}
	}
	if s.opts.Cluster != nil {
		s.clusterStatus(r.Context(), &body)
	}
	if q := body.InternalQueue; q.MaxSize > 0 {
		body.InternalQueue.CapacityUsedPercent = float64(q.Size) * 100 / float64(q.MaxSize)
	}
	writeJSON(w, http.StatusOK, body)
	return nil
}

// clusterStatus replaces body's queue and capacity figures with the
// cluster's: queue totals from Redis, tabs summed over the live nodes'
// heartbeats. With Redis unreachable body keeps this node's figures.
func (s *server) clusterStatus(ctx context.Context, body *statusBody) {
	cs, err := s.opts.Cluster.Status(ctx)
	if err != nil {
		body.Cluster = &clusterStatus{LiveNodes: []string{}}
		return
	}
	body.Cluster = &clusterStatus{RedisReachable: true, LiveNodes: cs.Nodes, Paused: cs.Paused, Claimed: cs.Claimed}
	if len(cs.Nodes) == 0 { // this node has not beaten yet: keep its figures
		return
	}
	body.InternalQueue.Size, body.InternalQueue.MaxSize = cs.InternalQueue, cs.QueueMax
	body.RSCapacity.TotalFreeTabs = cs.Capacity.Free
	body.RSCapacity.ReservedForOnline = cs.Capacity.ReservedForOnline
	body.RSCapacity.AvailableForRecache = cs.Capacity.AvailableForRecache
	for id, q := range cs.Queues {
		if _, ok := body.Queues[strconv.Itoa(id)]; !ok {
			continue // not configured here
		}
		body.Queues[strconv.Itoa(id)] = map[string]queueStat{
			"high":        {q[0].Total, q[0].DueNow},
			"normal":      {q[1].Total, q[1].DueNow},
			"autorecache": {q[2].Total, q[2].DueNow},
		}
	}
}

func (s *server) pause(w http.ResponseWriter, _ *http.Request) error {
	if !s.opts.SchedulerControl {
		return errorf(http.StatusForbidden, "Scheduler control API not enabled")
	}
	s.opts.Scheduler.Pause()
	writeJSON(w, http.StatusOK, okBody{Status: "ok", Message: "Scheduler paused"})
	return nil
}

func (s *server) resume(w http.ResponseWriter, _ *http.Request) error {
	if !s.opts.SchedulerControl {
		return errorf(http.StatusForbidden, "Scheduler control API not enabled")
	}
	s.opts.Scheduler.Resume()
	writeJSON(w, http.StatusOK, okBody{Status: "ok", Message: "Scheduler resumed"})
	return nil
}
