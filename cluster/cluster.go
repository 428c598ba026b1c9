// Package cluster lets several PRISM nodes share one cache through Redis (or
// Valkey): a shared tier behind each node's own memory and disk tiers (so a
// local hit never calls Redis), one render per page cluster-wide (a
// token-checked lease lock, renewed while the render runs, taken over when
// its holder dies), and an event stream that carries purges and fresh
// renders to every node, each reading from its own saved position.
//
// Redis trouble never fails a request: lookups miss, locks are skipped (the
// node renders alone, its own flights still coalescing), purges apply
// locally at once and reach the cluster when Redis is back.
package cluster

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/redis/go-redis/v9"

	"github.com/prismproxy/prism/cachestore"
	"github.com/prismproxy/prism/internal/metricdoc"
)

// Options configures a Node.
type Options struct {
	// URL is the Redis server, "redis://[:password@]host:port/db" or
	// "rediss://..." (required).
	URL string
	// NodeID names this node (required); two live nodes may not share one.
	NodeID string
	// KeyPrefix starts every Redis key PRISM uses; "" means "prism:".
	KeyPrefix string
	// CallTimeout bounds each Redis call on a request's path; 0 means 250ms.
	CallTimeout time.Duration
	// LockLease is the render lock's lease, renewed every third of it while
	// the render runs; a dead holder's lock lapses after it. 0 means 5s.
	LockLease time.Duration
	// PurgeWait is how long a purge waits for every live node to apply it;
	// 0 means 2s.
	PurgeWait time.Duration
	// Store is this node's cache (required): purges and other nodes'
	// renders are applied to it.
	Store *cachestore.Store
	// HostIDs lists the configured hosts (for purges of every host).
	HostIDs []int
	// MaxAge is how long a shared entry is kept after its render (the
	// cache's ttl + stale_ttl); 0 means 24h.
	MaxAge time.Duration
	// MaxEntryBytes bounds an entry read from Redis; 0 means 64 MiB.
	MaxEntryBytes int64
	// ClaimLease is how long a claimed shared recache stays claimed without
	// its node renewing it (every heartbeat); a dead node's claims return
	// to the queue after it. 0 means 15s.
	ClaimLease time.Duration
	// Stats, when set, is called every heartbeat for what this node reports
	// to the cluster-wide status (tabs, queues).
	Stats func() NodeStats
	// StateDir holds the node's saved stream position (required).
	StateDir string
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Metrics receives prism_cluster_* metrics; nil registers none.
	Metrics *metricdoc.Set
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Node is one PRISM process's membership of a cluster. It is safe for
// concurrent use; Run must be running for events to be applied.
type Node struct {
	opts  Options
	log   *slog.Logger
	rdb   *redis.Client
	token string // this process's registration and lock owner
	keys  keyspace
	// streamMax is the event stream's length kept (streamMax; tests lower it).
	streamMax int

	up      atomic.Bool  // the last Redis call succeeded
	applied atomic.Value // string: the last stream id this node applied
	// caughtUp is when (unix ns) a read of the stream last found nothing
	// more to apply.
	caughtUp atomic.Int64

	mu      sync.Mutex
	waiters map[string][]chan struct{} // lock hash -> waiting Lock calls
	pending []event                    // purges made while Redis was unreachable
	claims  map[string]struct{}        // shared recache claims this node renders

	warmed atomic.Pointer[func(cachestore.Key, error)] // OnWarmed

	m nodeMetrics
}

type nodeMetrics struct {
	lockAcquired, lockWaited, lockTakenOver, lockLocal *metrics.Counter
	lockBusy                                           *metrics.Counter // attempts that found the lock held
	sharedHit, sharedMiss, sharedError                 *metrics.Counter
	published, refused                                 *metrics.Counter
	eventsApplied                                      *metrics.Counter
	claimed, reaped                                    *metrics.Counter
}

// Errors.
var (
	// ErrNodeIDInUse is returned by Run when another live node has this id.
	ErrNodeIDInUse = errors.New("cluster: node id in use by another live node")
)

// New checks opts and builds a Node; it does not contact Redis (Run does,
// and a node starts while Redis is unreachable).
func New(opts Options) (*Node, error) {
	var errs []error
	if opts.URL == "" {
		errs = append(errs, errors.New("Options.URL is required"))
	}
	if strings.TrimSpace(opts.NodeID) == "" {
		errs = append(errs, errors.New("Options.NodeID is required"))
	}
	if opts.Store == nil {
		errs = append(errs, errors.New("Options.Store is required"))
	}
	if opts.StateDir == "" {
		errs = append(errs, errors.New("Options.StateDir is required"))
	}
	var ro *redis.Options
	if opts.URL != "" {
		var err error
		if ro, err = redis.ParseURL(opts.URL); err != nil {
			errs = append(errs, fmt.Errorf("redis URL: %w", redactErr(err, opts.URL)))
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("cluster: %w", errors.Join(errs...))
	}
	if opts.KeyPrefix == "" {
		opts.KeyPrefix = "prism:"
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = 250 * time.Millisecond
	}
	if opts.LockLease <= 0 {
		opts.LockLease = 5 * time.Second
	}
	if opts.PurgeWait <= 0 {
		opts.PurgeWait = 2 * time.Second
	}
	if opts.ClaimLease <= 0 {
		opts.ClaimLease = 15 * time.Second
	}
	if opts.MaxAge <= 0 {
		opts.MaxAge = 24 * time.Hour
	}
	if opts.MaxEntryBytes <= 0 {
		opts.MaxEntryBytes = 64 << 20
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	ro.DialTimeout = max(ro.DialTimeout, time.Second)
	ro.ReadTimeout, ro.WriteTimeout = opts.CallTimeout, opts.CallTimeout
	ro.MaxRetries = 0 // a slow Redis must not multiply a request's wait
	ro.ContextTimeoutEnabled = true
	n := &Node{
		opts:      opts,
		log:       opts.Logger,
		rdb:       redis.NewClient(ro),
		token:     randomToken(),
		keys:      keyspace(opts.KeyPrefix),
		streamMax: streamMax,
		waiters:   map[string][]chan struct{}{},
		claims:    map[string]struct{}{},
	}
	n.applied.Store("")
	n.up.Store(true) // until a call fails: Join finds out at once
	n.caughtUp.Store(opts.Now().UnixNano())
	n.registerMetrics()
	return n, nil
}

func (n *Node) registerMetrics() {
	set := n.opts.Metrics // nil: the counters still work, nothing is exported
	const lock = "Cluster render locks asked for, by result: acquired at once, waited (after its holder released it), taken_over (after its holder's lease ran out), local (Redis unreachable: rendered without the lock)."
	const shared = "Lookups in the cluster's shared tier after a local miss, by result (hit, miss, error)."
	const claims = "Shared recache queue claims, by result: claimed by this node, returned (another node's lapsed claims put back in the queue)."
	n.m = nodeMetrics{
		lockAcquired:  set.Counter(`prism_cluster_lock_total{result="acquired"}`, lock),
		lockWaited:    set.Counter(`prism_cluster_lock_total{result="waited"}`, lock),
		lockTakenOver: set.Counter(`prism_cluster_lock_total{result="taken_over"}`, lock),
		lockLocal:     set.Counter(`prism_cluster_lock_total{result="local"}`, lock),
		lockBusy:      set.Counter(`prism_cluster_lock_busy_total`, "Render lock attempts that found the lock held by another node."),
		sharedHit:     set.Counter(`prism_cluster_shared_total{result="hit"}`, shared),
		sharedMiss:    set.Counter(`prism_cluster_shared_total{result="miss"}`, shared),
		sharedError:   set.Counter(`prism_cluster_shared_total{result="error"}`, shared),
		published:     set.Counter(`prism_cluster_published_total`, "Renders published to the shared tier and the event stream."),
		refused:       set.Counter(`prism_cluster_publish_refused_total`, "Renders not published because a purge ran while they rendered."),
		eventsApplied: set.Counter(`prism_cluster_events_applied_total`, "Events (fills, purges) from other nodes applied to this node's cache."),
		claimed:       set.Counter(`prism_cluster_queue_claims_total{result="claimed"}`, claims),
		reaped:        set.Counter(`prism_cluster_queue_claims_total{result="returned"}`, claims),
	}
	if set == nil {
		return
	}
	set.Gauge(`prism_cluster_redis_up`, "1 while Redis answers this node, else 0.", func() float64 {
		if n.up.Load() {
			return 1
		}
		return 0
	})
	set.Gauge(`prism_cluster_purge_lag_seconds`, "Time since this node last knew it had applied every purge of the cluster, in seconds.",
		func() float64 { return n.lag().Seconds() })
}

// ID returns the node's id.
func (n *Node) ID() string { return n.opts.NodeID }

// Reachable reports whether the last Redis call succeeded.
func (n *Node) Reachable() bool { return n.up.Load() }

// Info is this node's view of the cluster, for the admin /status.
type Info struct {
	NodeID         string   `json:"node_id"`
	LiveNodes      []string `json:"live_nodes"` // nil when Redis is unreachable
	RedisReachable bool     `json:"redis_reachable"`
	// PurgeLagSeconds is how long ago this node last knew it had applied
	// every purge made anywhere.
	PurgeLagSeconds float64 `json:"purge_lag_seconds"`
	PendingPurges   int     `json:"pending_purges"` // made here, not yet delivered
}

// Info reports the node's id, the live nodes (one bounded Redis call),
// whether Redis answers, the purge lag and the purges waiting for Redis.
func (n *Node) Info(ctx context.Context) Info {
	live, err := n.liveNodes(ctx)
	n.mu.Lock()
	pending := len(n.pending)
	n.mu.Unlock()
	if live == nil && err == nil {
		live = []string{}
	}
	return Info{NodeID: n.opts.NodeID, LiveNodes: live, RedisReachable: err == nil,
		PurgeLagSeconds: n.lag().Seconds(), PendingPurges: pending}
}

// Close releases the Redis connections.
func (n *Node) Close() error { return n.rdb.Close() }

// call returns a context bounded by CallTimeout.
func (n *Node) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, n.opts.CallTimeout)
}

// note records a Redis call's outcome for Reachable.
func (n *Node) note(err error) error {
	switch {
	case err == nil, errors.Is(err, redis.Nil):
		n.up.Store(true)
	case errors.Is(err, context.Canceled):
	default:
		n.up.Store(false)
	}
	return err
}

// keyspace spells the Redis keys under a prefix.
type keyspace string

func (p keyspace) entry(h string) string { return string(p) + "e:" + h }
func (p keyspace) lock(h string) string  { return string(p) + "l:" + h }
func (p keyspace) index(host int) string { return string(p) + "i:" + strconv.Itoa(host) }
func (p keyspace) urls(host int) string  { return string(p) + "u:" + strconv.Itoa(host) }
func (p keyspace) epoch() string         { return string(p) + "epoch" }
func (p keyspace) events() string        { return string(p) + "events" }
func (p keyspace) trimmed() string       { return string(p) + "trimmed" }
func (p keyspace) acks() string          { return string(p) + "acks" }
func (p keyspace) nodes() string         { return string(p) + "nodes" }
func (p keyspace) node(id string) string { return string(p) + "node:" + id }
func (p keyspace) released() string      { return string(p) + "released" }

// member spells k in an index and in events: "host:dimension:url".
func member(k cachestore.Key) string {
	return strconv.Itoa(k.HostID) + ":" + strconv.Itoa(k.DimensionID) + ":" + k.URL
}

// parseMember reverses member; ok is false for anything else.
func parseMember(s string) (cachestore.Key, bool) {
	hs, rest, ok1 := strings.Cut(s, ":")
	ds, u, ok2 := strings.Cut(rest, ":")
	h, err1 := strconv.Atoi(hs)
	d, err2 := strconv.Atoi(ds)
	if !ok1 || !ok2 || err1 != nil || err2 != nil || h <= 0 || d <= 0 || u == "" || len(u) > 1<<16 {
		return cachestore.Key{}, false
	}
	return cachestore.Key{HostID: h, DimensionID: d, URL: u}, true
}

// urlMember spells k in its host's URL index, "url\x00dimension": all at
// score 0, so the index is sorted by URL and a glob purge reads only the
// range its literal prefix selects.
func urlMember(k cachestore.Key) string {
	return k.URL + "\x00" + strconv.Itoa(k.DimensionID)
}

// parseURLMember reverses urlMember for host.
func parseURLMember(host int, s string) (cachestore.Key, bool) {
	i := strings.LastIndexByte(s, 0)
	if i < 0 {
		return cachestore.Key{}, false
	}
	d, err := strconv.Atoi(s[i+1:])
	if err != nil || d <= 0 || i == 0 || i > 1<<16 {
		return cachestore.Key{}, false
	}
	return cachestore.Key{HostID: host, DimensionID: d, URL: s[:i]}, true
}

// hash names k's entry and lock keys: bounded length whatever the URL.
func hash(k cachestore.Key) string {
	sum := sha256.Sum256([]byte(member(k)))
	return hex.EncodeToString(sum[:16])
}

func randomToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// redactErr keeps a password in url out of err's text.
func redactErr(err error, url string) error {
	msg := err.Error()
	if i := strings.Index(url, "@"); i > 0 {
		if j := strings.Index(url, "://"); j >= 0 && j < i {
			msg = strings.ReplaceAll(msg, url[j+3:i], "xxxxx")
		}
	}
	return errors.New(msg)
}

// ClientLogger routes the Redis client's own messages (failed dials while
// Redis is down, one per attempt) to l at debug level: Node reports
// reachability itself, once per change. Install it with redis.SetLogger,
// which is process-wide.
func ClientLogger(l *slog.Logger) interface {
	Printf(ctx context.Context, format string, v ...any)
} {
	return clientLog{l}
}

type clientLog struct{ l *slog.Logger }

func (c clientLog) Printf(ctx context.Context, format string, v ...any) {
	c.l.DebugContext(ctx, "redis client: "+fmt.Sprintf(format, v...))
}
