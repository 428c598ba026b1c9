package cachestore

// Entry file format, version 1. All integers are little-endian.
//
//	offset  size  field
//	0       4     magic "PRSC"
//	4       1     format version (1)
//	5       1     flags (bit 0: partial; other bits must be zero)
//	6       2     HTTP status (100-999)
//	8       8     key host id (int64)
//	16      8     key dimension id (int64)
//	24      8     rendered-at, Unix seconds (int64)
//	32      4     rendered-at, nanoseconds (< 1e9)
//	36      4     URL length
//	40      4     ETag length
//	44      4     header section length
//	48      8     body length
//	56      ...   URL, ETag
//	        4     CRC-32C of everything above ("head": what the index needs)
//	        ...   header section: u32 count, then per header (names strictly
//	              ascending): u16 name length, name, u32 value count, then per
//	              value u32 length and the value
//	        ...   body (gzip-compressed)
//	        4     CRC-32C of everything above
//
// The head has its own checksum so the index rebuild can read and trust a
// few hundred bytes per file; Get always verifies the checksum of the whole
// file. Every length is bounded before anything is allocated, and the sum of
// the lengths must equal the file size, so a hostile file cannot make the
// decoder allocate more than the file holds.

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

const (
	fileMagic     = "PRSC"
	formatVersion = 1
	fixedLen      = 56
	flagPartial   = 1

	maxURLLen    = 64 << 10 // bytes of Key.URL
	maxETagLen   = 1 << 10
	maxHeaderLen = 1 << 20 // bytes of the encoded header section
	minFileLen   = fixedLen + 4 + 4 + 4
)

// errCorrupt marks a file that must not be served (and is removed).
var errCorrupt = errors.New("cachestore: corrupt entry file")

func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errCorrupt, fmt.Sprintf(format, args...))
}

func crc(b []byte) uint32 { return crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)) }

// fileHead is the part of an entry file the index needs.
type fileHead struct {
	key        Key
	status     int
	flags      byte
	renderedAt time.Time
	etag       string
	headerLen  int64
	bodyLen    int64
}

// headLen is the length of the head including its checksum.
func (h *fileHead) headLen() int64 {
	return fixedLen + int64(len(h.key.URL)) + int64(len(h.etag)) + 4
}

// fileLen is the total length of the file the head describes.
func (h *fileHead) fileLen() int64 { return h.headLen() + h.headerLen + h.bodyLen + 4 }

// fixedFields holds the lengths parsed from the fixed part of the head.
type fixedFields struct {
	head            fileHead
	urlLen, etagLen int
}

// parseFixed decodes and bounds-checks the first fixedLen bytes.
func parseFixed(b []byte, maxBody int64) (fixedFields, error) {
	var f fixedFields
	if len(b) < fixedLen {
		return f, corruptf("short head")
	}
	if string(b[0:4]) != fileMagic {
		return f, corruptf("bad magic")
	}
	if b[4] != formatVersion {
		return f, corruptf("unknown version %d", b[4])
	}
	f.head.flags = b[5]
	if f.head.flags&^flagPartial != 0 {
		return f, corruptf("unknown flags %#x", f.head.flags)
	}
	le := binary.LittleEndian
	f.head.status = int(le.Uint16(b[6:]))
	if f.head.status < 100 || f.head.status > 999 {
		return f, corruptf("bad status %d", f.head.status)
	}
	f.head.key.HostID = int(int64(le.Uint64(b[8:])))
	f.head.key.DimensionID = int(int64(le.Uint64(b[16:])))
	sec, nsec := int64(le.Uint64(b[24:])), le.Uint32(b[32:])
	if nsec >= 1e9 {
		return f, corruptf("bad time")
	}
	f.head.renderedAt = time.Unix(sec, int64(nsec)).UTC()
	urlLen, etagLen, hdrLen, bodyLen := le.Uint32(b[36:]), le.Uint32(b[40:]), le.Uint32(b[44:]), le.Uint64(b[48:])
	if urlLen == 0 || urlLen > maxURLLen || etagLen > maxETagLen || hdrLen < 4 || hdrLen > maxHeaderLen ||
		bodyLen > uint64(maxBody) {
		return f, corruptf("length out of bounds")
	}
	f.urlLen, f.etagLen = int(urlLen), int(etagLen)
	f.head.headerLen, f.head.bodyLen = int64(hdrLen), int64(bodyLen)
	return f, nil
}

// parseHead decodes the head from b, which must hold at least the whole head.
// It returns the head and its length.
func parseHead(b []byte, maxBody int64) (fileHead, int, error) {
	f, err := parseFixed(b, maxBody)
	if err != nil {
		return fileHead{}, 0, err
	}
	n := fixedLen + f.urlLen + f.etagLen
	if len(b) < n+4 {
		return fileHead{}, 0, corruptf("short head")
	}
	if crc(b[:n]) != binary.LittleEndian.Uint32(b[n:]) {
		return fileHead{}, 0, corruptf("head checksum mismatch")
	}
	f.head.key.URL = string(b[fixedLen : fixedLen+f.urlLen])
	f.head.etag = string(b[fixedLen+f.urlLen : n])
	return f.head, n + 4, nil
}

// decodeEntry decodes a whole entry file. It returns an error wrapping
// errCorrupt unless b is a complete, checksummed, well-formed file. The
// returned Body aliases b.
func decodeEntry(b []byte, maxBody int64) (*Entry, error) {
	if len(b) < minFileLen {
		return nil, corruptf("short file (%d bytes)", len(b))
	}
	h, off, err := parseHead(b, maxBody)
	if err != nil {
		return nil, err
	}
	if h.fileLen() != int64(len(b)) {
		return nil, corruptf("length %d, head says %d", len(b), h.fileLen())
	}
	end := len(b) - 4
	if crc(b[:end]) != binary.LittleEndian.Uint32(b[end:]) {
		return nil, corruptf("checksum mismatch")
	}
	hdr, err := decodeHeader(b[off : off+int(h.headerLen)])
	if err != nil {
		return nil, err
	}
	bodyAt := off + int(h.headerLen)
	return &Entry{
		Key:        h.key,
		Status:     h.status,
		Header:     hdr,
		Body:       b[bodyAt:end:end],
		RenderedAt: h.renderedAt,
		Partial:    h.flags&flagPartial != 0,
		ETag:       h.etag,
	}, nil
}

// decodeHeader decodes the header section; every count is bounded by the
// bytes left, so allocation never exceeds the section's size.
func decodeHeader(b []byte) (http.Header, error) {
	le := binary.LittleEndian
	if len(b) < 4 {
		return nil, corruptf("short header section")
	}
	count := le.Uint32(b)
	b = b[4:]
	if uint64(count) > uint64(len(b))/6 { // each header needs at least 6 bytes
		return nil, corruptf("header count out of bounds")
	}
	hdr := make(http.Header, count)
	prev := ""
	for i := uint32(0); i < count; i++ {
		if len(b) < 2 {
			return nil, corruptf("short header name")
		}
		nl := int(le.Uint16(b))
		b = b[2:]
		if nl == 0 || len(b) < nl+4 {
			return nil, corruptf("bad header name")
		}
		name := string(b[:nl])
		if i > 0 && name <= prev {
			return nil, corruptf("header names not ascending")
		}
		prev = name
		nv := le.Uint32(b[nl:])
		b = b[nl+4:]
		if uint64(nv) > uint64(len(b))/4 {
			return nil, corruptf("header value count out of bounds")
		}
		vals := make([]string, nv)
		for j := range vals {
			if len(b) < 4 {
				return nil, corruptf("short header value")
			}
			vl := le.Uint32(b)
			b = b[4:]
			if uint64(vl) > uint64(len(b)) {
				return nil, corruptf("header value out of bounds")
			}
			vals[j] = string(b[:vl])
			b = b[vl:]
		}
		hdr[name] = vals
	}
	if len(b) != 0 {
		return nil, corruptf("trailing bytes in header section")
	}
	return hdr, nil
}

// headerSectionLen returns the encoded size of h's section.
func headerSectionLen(h http.Header) int {
	n := 4
	for name, vals := range h {
		n += 2 + len(name) + 4
		for _, v := range vals {
			n += 4 + len(v)
		}
	}
	return n
}

// validateEntry checks what the file format can hold.
func validateEntry(e *Entry, maxBody int64) error {
	switch {
	case e == nil:
		return fmt.Errorf("%w: nil entry", ErrInvalidEntry)
	case e.Status < 100 || e.Status > 999:
		return fmt.Errorf("%w: status %d", ErrInvalidEntry, e.Status)
	case e.Key.URL == "" || len(e.Key.URL) > maxURLLen:
		return fmt.Errorf("%w: URL length %d (1-%d)", ErrInvalidEntry, len(e.Key.URL), maxURLLen)
	case len(e.ETag) > maxETagLen:
		return fmt.Errorf("%w: ETag longer than %d bytes", ErrInvalidEntry, maxETagLen)
	case int64(len(e.Body)) > maxBody:
		return fmt.Errorf("%w: body of %d bytes exceeds %d", ErrTooLarge, len(e.Body), maxBody)
	}
	for name := range e.Header {
		if name == "" || len(name) > 0xffff {
			return fmt.Errorf("%w: header name length %d", ErrInvalidEntry, len(name))
		}
	}
	if n := headerSectionLen(e.Header); n > maxHeaderLen {
		return fmt.Errorf("%w: headers encode to %d bytes (max %d)", ErrTooLarge, n, maxHeaderLen)
	}
	return nil
}

// encodeEntry renders e in the file format. e must have passed validateEntry.
func encodeEntry(e *Entry) []byte {
	le := binary.LittleEndian
	hdrLen := headerSectionLen(e.Header)
	headLen := fixedLen + len(e.Key.URL) + len(e.ETag)
	total := headLen + 4 + hdrLen + len(e.Body) + 4
	b := make([]byte, fixedLen, total)
	copy(b, fileMagic)
	b[4] = formatVersion
	if e.Partial {
		b[5] = flagPartial
	}
	le.PutUint16(b[6:], uint16(e.Status))
	le.PutUint64(b[8:], uint64(int64(e.Key.HostID)))
	le.PutUint64(b[16:], uint64(int64(e.Key.DimensionID)))
	le.PutUint64(b[24:], uint64(e.RenderedAt.Unix()))
	le.PutUint32(b[32:], uint32(e.RenderedAt.Nanosecond()))
	le.PutUint32(b[36:], uint32(len(e.Key.URL)))
	le.PutUint32(b[40:], uint32(len(e.ETag)))
	le.PutUint32(b[44:], uint32(hdrLen))
	le.PutUint64(b[48:], uint64(len(e.Body)))
	b = append(b, e.Key.URL...)
	b = append(b, e.ETag...)
	b = le.AppendUint32(b, crc(b))

	names := make([]string, 0, len(e.Header))
	for name := range e.Header {
		names = append(names, name)
	}
	slices.Sort(names)
	b = le.AppendUint32(b, uint32(len(names)))
	for _, name := range names {
		vals := e.Header[name]
		b = le.AppendUint16(b, uint16(len(name)))
		b = append(b, name...)
		b = le.AppendUint32(b, uint32(len(vals)))
		for _, v := range vals {
			b = le.AppendUint32(b, uint32(len(v)))
			b = append(b, v...)
		}
	}
	b = append(b, e.Body...)
	return le.AppendUint32(b, crc(b))
}

// fileName returns the hex SHA-256 of k's canonical form.
func fileName(k Key) string {
	var buf [128]byte
	b := strconv.AppendInt(buf[:0], int64(k.HostID), 10)
	b = append(b, '/')
	b = strconv.AppendInt(b, int64(k.DimensionID), 10)
	b = append(b, k.URL...)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// entryPath returns where k's file lives: dir/ab/cd/abcd....
func entryPath(dir string, k Key) string {
	name := fileName(k)
	return filepath.Join(dir, name[0:2], name[2:4], name)
}

// isHexName reports whether s is n lowercase hex digits.
func isHexName(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

const tempMarker = ".tmp-"

func isTempName(name string) bool { return strings.Contains(name, tempMarker) }

// readEntryFile reads and decodes the entry file at path. A missing file is
// fs.ErrNotExist; a file that must not be served wraps errCorrupt. info is the
// opened file's identity, for removing exactly that file later.
func readEntryFile(path string, maxBody int64) (*Entry, fs.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	size := info.Size()
	if !info.Mode().IsRegular() || size < minFileLen || size > maxFileLen(maxBody) {
		return nil, info, corruptf("size %d", size)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(f, b); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, info, corruptf("file shrank while reading")
		}
		return nil, info, err
	}
	e, err := decodeEntry(b, maxBody)
	return e, info, err
}

func maxFileLen(maxBody int64) int64 {
	return fixedLen + maxURLLen + maxETagLen + 4 + maxHeaderLen + maxBody + 4
}

// readFileHead reads only the head of the entry file at path, checks its
// checksum and that the file's size matches the lengths it declares.
func readFileHead(path string, maxBody int64) (fileHead, fs.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return fileHead{}, nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return fileHead{}, nil, err
	}
	if !info.Mode().IsRegular() || info.Size() < minFileLen {
		return fileHead{}, info, corruptf("size %d", info.Size())
	}
	var fixed [fixedLen]byte
	if _, err := io.ReadFull(f, fixed[:]); err != nil {
		return fileHead{}, info, corruptf("short head")
	}
	ff, err := parseFixed(fixed[:], maxBody)
	if err != nil {
		return fileHead{}, info, err
	}
	rest := make([]byte, fixedLen+ff.urlLen+ff.etagLen+4)
	copy(rest, fixed[:])
	if _, err := io.ReadFull(f, rest[fixedLen:]); err != nil {
		return fileHead{}, info, corruptf("short head")
	}
	h, _, err := parseHead(rest, maxBody)
	if err != nil {
		return fileHead{}, info, err
	}
	if h.fileLen() != info.Size() {
		return fileHead{}, info, corruptf("length %d, head says %d", info.Size(), h.fileLen())
	}
	return h, info, nil
}

// writeTemp writes data to a new temp file next to path and fsyncs it. It
// creates the parent directories as needed.
func (s *Store) writeTemp(path string, data []byte) (string, error) {
	dir := filepath.Dir(path)
	if err := s.ensureDir(dir); err != nil {
		return "", err
	}
	tmp := path + tempMarker + s.instance + "-" + strconv.FormatUint(s.tmpSeq.Add(1), 10)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return "", fmt.Errorf("create temp file: %w", err)
	}
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("write temp file: %w", werr)
	}
	return tmp, nil
}

// ensureDir creates dir (two levels under the store's root at most) and
// fsyncs the parents of what it created so the new directory entries are
// durable.
func (s *Store) ensureDir(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create directory: %w", err)
	}
	parent := filepath.Dir(dir)
	if err := syncDir(parent); err != nil {
		return err
	}
	return syncDir(filepath.Dir(parent))
}

// syncDir fsyncs a directory so a rename or create in it is durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	return nil
}

// removeIfSame removes path if it is still the file described by info
// (a concurrent Put may have renamed a fresh file over it).
func removeIfSame(path string, info fs.FileInfo) {
	if info == nil {
		return
	}
	cur, err := os.Lstat(path)
	if err != nil || !os.SameFile(cur, info) {
		return
	}
	os.Remove(path)
}
