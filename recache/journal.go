package recache

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/prismproxy/prism/cachestore"
)

// The journal is an append-only file of lines
//
//	<crc32 of payload, 8 hex digits> <op> <priority|-> <host> <dim> <quoted url>
//
// e.g. `1a2b3c4d add high 1 2 "/a?b=1"`. An "add" record says a key entered
// the high or normal queue (or was raised to high); a "done" record says it
// left them. Replaying the file in order gives the durable queue: each key's
// best priority since its last done. The URL is Go-quoted (strconv), which
// round-trips any bytes exactly.
const (
	journalName = "queue.journal"
	pausedName  = "paused"
	// maxRecord bounds one journal line when reading; longer lines are
	// skipped as corrupt. maxURL (checked at Enqueue) keeps written records
	// well under it even when every byte needs escaping.
	maxRecord = 96 << 10
	maxURL    = 16 << 10
)

type record struct {
	Op   string // "add" or "done"
	Prio Priority
	Host int
	Dim  int
	URL  string
}

func (r record) key() cachestore.Key {
	return cachestore.Key{HostID: r.Host, DimensionID: r.Dim, URL: r.URL}
}

func addRecord(k cachestore.Key, p Priority) record {
	return record{Op: "add", Prio: p, Host: k.HostID, Dim: k.DimensionID, URL: k.URL}
}

func doneRecord(k cachestore.Key) record {
	return record{Op: "done", Host: k.HostID, Dim: k.DimensionID, URL: k.URL}
}

// appendRecord encodes r as one journal line onto buf.
func appendRecord(buf []byte, r record) []byte {
	buf = append(buf, "00000000 "...)
	start := len(buf)
	buf = append(buf, r.Op...)
	buf = append(buf, ' ')
	if r.Op == "add" {
		buf = append(buf, r.Prio.String()...)
	} else {
		buf = append(buf, '-')
	}
	buf = append(buf, ' ')
	buf = strconv.AppendInt(buf, int64(r.Host), 10)
	buf = append(buf, ' ')
	buf = strconv.AppendInt(buf, int64(r.Dim), 10)
	buf = append(buf, ' ')
	buf = strconv.AppendQuote(buf, r.URL)
	sum := crc32.ChecksumIEEE(buf[start:])
	const hex = "0123456789abcdef"
	for i := 0; i < 8; i++ {
		buf[start-2-i] = hex[sum>>(4*i)&0xf]
	}
	return append(buf, '\n')
}

// parseRecord decodes one line (without its newline).
func parseRecord(line []byte) (record, bool) {
	var r record
	sum, payload, ok := bytes.Cut(line, []byte{' '})
	if !ok || len(sum) != 8 {
		return r, false
	}
	want, err := strconv.ParseUint(string(sum), 16, 32)
	if err != nil || uint32(want) != crc32.ChecksumIEEE(payload) {
		return r, false
	}
	f := bytes.SplitN(payload, []byte{' '}, 5)
	if len(f) != 5 {
		return r, false
	}
	r.Op = string(f[0])
	if r.Host, err = strconv.Atoi(string(f[2])); err != nil {
		return r, false
	}
	if r.Dim, err = strconv.Atoi(string(f[3])); err != nil {
		return r, false
	}
	if r.URL, err = strconv.Unquote(string(f[4])); err != nil {
		return r, false
	}
	switch r.Op {
	case "add":
		if r.Prio, err = ParsePriority(string(f[1])); err != nil || !r.Prio.durable() {
			return r, false
		}
	case "done":
	default:
		return r, false
	}
	return r, true
}

// replayed is the durable queue read back from a journal, in first-add order.
type replayed struct {
	keys    []cachestore.Key
	prio    map[cachestore.Key]Priority
	records int // valid records
	corrupt int // lines skipped: bad checksum, bad JSON, too long
	torn    bool
}

// replayJournal reads the journal at path. A missing file is an empty queue.
// Corrupt lines are skipped, and so is a final line without its newline (a
// write torn by a crash).
func replayJournal(path string) (*replayed, error) {
	out := &replayed{prio: map[cachestore.Key]Priority{}}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	defer f.Close()
	order := map[cachestore.Key]int{} // key -> position in first-add order
	var seq int
	rd := bufio.NewReaderSize(f, maxRecord)
	for {
		line, err := rd.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			out.corrupt++
			// Skip the rest of the overlong line.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = rd.ReadSlice('\n')
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("read journal: %w", err)
			}
			continue
		}
		if err == io.EOF {
			if len(line) > 0 {
				out.torn = true
			}
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read journal: %w", err)
		}
		r, ok := parseRecord(line[:len(line)-1])
		if !ok {
			out.corrupt++
			continue
		}
		out.records++
		k := r.key()
		switch r.Op {
		case "add":
			if old, ok := out.prio[k]; !ok || r.Prio < old {
				out.prio[k] = r.Prio
			}
			if _, ok := order[k]; !ok {
				order[k] = seq
				seq++
			}
		case "done":
			delete(out.prio, k)
			delete(order, k)
		}
	}
	type ordered struct {
		k   cachestore.Key
		seq int
	}
	all := make([]ordered, 0, len(order))
	for k, n := range order {
		all = append(all, ordered{k, n})
	}
	slices.SortFunc(all, func(a, b ordered) int { return a.seq - b.seq })
	out.keys = make([]cachestore.Key, len(all))
	for i, o := range all {
		out.keys[i] = o.k
	}
	return out, nil
}

// journal is the open append handle. It is not safe for concurrent use: the
// scheduler's mutex guards it.
type journal struct {
	dir     string
	path    string
	f       *os.File
	records int   // records in the file
	size    int64 // bytes in the file
	buf     []byte
}

func openJournal(dir string) (*journal, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("journal dir: %w", err)
	}
	return &journal{dir: dir, path: filepath.Join(dir, journalName)}, nil
}

// append writes recs, then fsyncs when sync is set.
func (j *journal) append(recs []record, sync bool) error {
	if j.f == nil {
		return errors.New("recache: journal closed")
	}
	buf := j.buf[:0]
	for _, r := range recs {
		buf = appendRecord(buf, r)
	}
	j.buf = buf
	if len(buf) > 1<<20 {
		j.buf = nil // do not pin a huge batch's buffer
	}
	if _, err := j.f.Write(buf); err != nil {
		// Cut off a partial write so the next record starts on a fresh line.
		if terr := j.f.Truncate(j.size); terr != nil {
			err = errors.Join(err, terr)
		}
		return fmt.Errorf("write journal: %w", err)
	}
	j.size += int64(len(buf))
	j.records += len(recs)
	if sync {
		if err := j.f.Sync(); err != nil {
			return fmt.Errorf("sync journal: %w", err)
		}
	}
	return nil
}

// rewrite replaces the journal with live (write temp, fsync, rename, fsync
// dir) and appends to the new file from then on.
func (j *journal) rewrite(live []record) error {
	tmp := j.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("compact journal: %w", err)
	}
	w := bufio.NewWriterSize(f, 64<<10)
	var line []byte
	for _, r := range live {
		line = appendRecord(line[:0], r)
		if _, err = w.Write(line); err != nil {
			break
		}
	}
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = os.Rename(tmp, j.path)
	}
	if err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("compact journal: %w", err)
	}
	// The handle written above now names the journal: keep appending to it
	// (its offset is at the end), so no reopen can fail after the rename.
	if j.f != nil {
		j.f.Close()
	}
	j.f = f
	j.records = len(live)
	j.size = 0
	if st, err := f.Stat(); err == nil {
		j.size = st.Size()
	}
	if err := syncDir(j.dir); err != nil {
		return fmt.Errorf("compact journal: %w", err)
	}
	return nil
}

func (j *journal) close() error {
	if j.f == nil {
		return nil
	}
	err := j.f.Close()
	j.f = nil
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// writePaused persists the pause flag: the file exists while paused.
func writePaused(dir string, paused bool) error {
	path := filepath.Join(dir, pausedName)
	if !paused {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return syncDir(dir)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.WriteString("paused\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return syncDir(dir)
}

func readPaused(dir string) (bool, error) {
	_, err := os.Stat(filepath.Join(dir, pausedName))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}
