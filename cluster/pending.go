package cluster

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Purges made while Redis was unreachable are kept in memory and in a file
// in StateDir, so that a node restarted before Redis came back still
// delivers them. Past maxPending they collapse into one purge of
// everything: a wider purge is always safe, a lost one is not.
const maxPending = 1000

func (n *Node) pendingFile() string {
	return filepath.Join(n.opts.StateDir, "cluster-pending-purges.json")
}

// keepPending adds ev to the purges awaiting delivery and saves them.
func (n *Node) keepPending(ev event) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.pending = append(n.pending, ev)
	if len(n.pending) > maxPending {
		n.pending = []event{{Type: "purge", Node: n.opts.NodeID, All: true}}
		n.log.Warn("cluster: too many purges waiting for Redis: they are kept as one purge of everything", "limit", maxPending)
	}
	n.savePendingLocked()
}

// savePendingLocked writes the pending purges (or removes the file when
// there are none); the caller holds mu.
func (n *Node) savePendingLocked() {
	if len(n.pending) == 0 {
		if err := os.Remove(n.pendingFile()); err != nil && !os.IsNotExist(err) {
			n.log.Warn("cluster: removing the pending purge file failed", "err", err)
		}
		return
	}
	b, _ := json.Marshal(n.pending) // events hold strings, ints and bools only
	if err := writeFileSync(n.pendingFile(), b); err != nil {
		n.log.Error("cluster: saving purges waiting for Redis failed: a restart before Redis is back loses them", "err", err)
	}
}

// loadPending reads the purges a previous process kept. An unreadable
// file becomes one purge of everything, for the same reason as maxPending.
func (n *Node) loadPending() {
	b, err := os.ReadFile(n.pendingFile())
	if os.IsNotExist(err) {
		return
	}
	var evs []event
	if err == nil {
		err = json.Unmarshal(b, &evs)
	}
	for _, ev := range evs {
		if err == nil && (ev.Type != "purge" || len(ev.Keys) == 0 && ev.Glob == "" && !ev.All) {
			err = fmt.Errorf("not a purge: %+v", ev)
		}
	}
	if err != nil || len(evs) > maxPending {
		n.log.Warn("cluster: the pending purge file is unreadable: delivering a purge of everything instead", "err", err)
		evs = []event{{Type: "purge", Node: n.opts.NodeID, All: true}}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for i := range evs {
		evs[i].Node = n.opts.NodeID
	}
	n.pending = append(evs, n.pending...)
	n.log.Info("cluster: purges made while Redis was unreachable will be delivered", "purges", len(evs))
}

// writeFileSync replaces path with b, durably.
func writeFileSync(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}
