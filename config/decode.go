package config

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// Problem is one thing wrong with a configuration.
type Problem struct {
	Key    string // key path, e.g. "hosts[0].dimensions[1].id"; empty for syntax errors
	Line   int    // 1-based line in the file; 0 when unknown
	Column int    // 1-based; 0 when unknown
	Msg    string
}

// Error formats the problem as "key: msg (line N)".
func (p *Problem) Error() string {
	var b strings.Builder
	if p.Key != "" {
		b.WriteString(p.Key)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	switch {
	case p.Line > 0 && p.Column > 0:
		fmt.Fprintf(&b, " (line %d, column %d)", p.Line, p.Column)
	case p.Line > 0:
		fmt.Fprintf(&b, " (line %d)", p.Line)
	}
	return b.String()
}

// joinProblems returns nil for no problems, else errors.Join of them.
func joinProblems(ps []*Problem) error {
	if len(ps) == 0 {
		return nil
	}
	errs := make([]error, len(ps))
	for i, p := range ps {
		errs[i] = p
	}
	return errors.Join(errs...)
}

// docIndex records where each key path is set in a document.
type docIndex struct {
	lines  map[string]int      // key path -> line
	byLine map[int][]string    // line -> key paths set there
	starts []int               // byte offset of each line start
	p      *unstable.Parser    // the parser being walked
	arrays map[string]int      // array-of-tables path -> elements so far
	durs   map[string]struct{} // index-free paths of Duration fields
	probs  []*Problem          // values that are not durations where one is due
}

// decode decodes data strictly into c and records key lines in c.lines.
func decode(data []byte, c *Config) error {
	idx := indexDocument(data)
	c.lines = idx.lines
	if len(idx.probs) > 0 {
		// Checked before decoding: go-toml hands non-string values to
		// UnmarshalText without a position.
		return joinProblems(idx.probs)
	}
	err := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields().Decode(c)
	if err == nil {
		return nil
	}
	var sme *toml.StrictMissingError
	if errors.As(err, &sme) {
		ps := make([]*Problem, 0, len(sme.Errors))
		for i := range sme.Errors {
			e := &sme.Errors[i]
			line, col := e.Position()
			msg := "unknown key"
			if strings.Contains(e.Error(), "missing table") {
				msg = "unknown table"
			}
			ps = append(ps, &Problem{Key: idx.pathAt(line, e.Key()), Line: line, Column: col, Msg: msg})
		}
		return joinProblems(ps)
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		line, col := de.Position()
		return &Problem{Key: idx.pathAt(line, de.Key()), Line: line, Column: col, Msg: friendlyMessage(de.Error())}
	}
	return &Problem{Msg: strings.TrimPrefix(err.Error(), "toml: ")}
}

// friendlyMessage rewrites go-toml's messages that name Go types.
func friendlyMessage(msg string) string {
	msg = strings.TrimPrefix(msg, "toml: ")
	rest, ok := strings.CutPrefix(msg, "cannot decode TOML ")
	got, rest, ok2 := strings.Cut(rest, " into struct field ")
	i := strings.LastIndex(rest, " of type ")
	if !ok || !ok2 || i < 0 {
		return msg
	}
	want := rest[i+len(" of type "):]
	switch {
	case want == "string":
		want = "a string"
	case want == "bool":
		want = "a boolean"
	case strings.HasPrefix(want, "int"):
		want = "an integer"
	case want == "[]string":
		want = "an array of strings"
	case strings.HasPrefix(want, "[]"):
		want = "an array of tables"
	default:
		want = "a table"
	}
	return fmt.Sprintf("must be %s, not a TOML %s", want, got)
}

// indexDocument walks data's syntax tree, recording the line of every key
// path and checking that every duration key holds a duration string. On a
// syntax error it stops; the decoder then reports the error.
func indexDocument(data []byte) *docIndex {
	idx := &docIndex{
		lines:  map[string]int{},
		byLine: map[int][]string{},
		starts: []int{0},
		p:      &unstable.Parser{},
		arrays: map[string]int{},
		durs:   map[string]struct{}{},
	}
	for i, b := range data {
		if b == '\n' {
			idx.starts = append(idx.starts, i+1)
		}
	}
	durationPaths(reflect.TypeOf(Config{}), "", idx.durs)
	idx.p.Reset(data)
	var table string // current table path, resolved ("hosts[0].dimensions[1]")
	for idx.p.NextExpression() {
		e := idx.p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			parts, line := idx.key(e)
			if len(parts) == 0 {
				continue
			}
			path := idx.resolve("", parts[:len(parts)-1])
			last := join(path, parts[len(parts)-1])
			if e.Kind == unstable.ArrayTable {
				n := idx.arrays[last]
				idx.arrays[last] = n + 1
				last += "[" + strconv.Itoa(n) + "]"
			} else if n, ok := idx.arrays[last]; ok && n > 0 {
				last += "[" + strconv.Itoa(n-1) + "]"
			}
			table = last
			idx.record(table, line)
		case unstable.KeyValue:
			idx.keyValue(table, e)
		}
	}
	return idx
}

// keyValue records a key-value expression (top level or inside an inline
// table) under table.
func (idx *docIndex) keyValue(table string, e *unstable.Node) {
	parts, line := idx.key(e)
	if len(parts) == 0 {
		return
	}
	path := table
	for _, p := range parts {
		path = join(path, p)
		idx.record(path, line)
	}
	idx.value(path, e.Value(), line)
}

// value records an array's elements and an inline table's keys, and checks
// duration values.
func (idx *docIndex) value(path string, v *unstable.Node, line int) {
	if !v.Valid() {
		return
	}
	if v.Raw.Length > 0 {
		line = idx.line(int(v.Raw.Offset))
	}
	if _, ok := idx.durs[stripIndexes(path)]; ok {
		idx.checkDuration(path, v, line)
		return
	}
	switch v.Kind {
	case unstable.Array:
		i := 0
		it := v.Children()
		for it.Next() {
			n := it.Node()
			if n.Kind == unstable.Comment {
				continue
			}
			el := path + "[" + strconv.Itoa(i) + "]"
			i++
			l := line
			if n.Raw.Length > 0 {
				l = idx.line(int(n.Raw.Offset))
			}
			idx.record(el, l)
			idx.value(el, n, l)
		}
	case unstable.InlineTable:
		it := v.Children()
		for it.Next() {
			if n := it.Node(); n.Kind == unstable.KeyValue {
				idx.keyValue(path, n)
			}
		}
	}
}

func (idx *docIndex) checkDuration(path string, v *unstable.Node, line int) {
	if v.Kind != unstable.String {
		idx.probs = append(idx.probs, &Problem{Key: path, Line: line,
			Msg: fmt.Sprintf("must be a duration string such as \"15s\" or \"1h30m\", not a TOML %s", strings.ToLower(v.Kind.String()))})
		return
	}
	if _, err := time.ParseDuration(string(v.Data)); err != nil {
		idx.probs = append(idx.probs, &Problem{Key: path, Line: line,
			Msg: fmt.Sprintf("invalid duration %q (want e.g. \"15s\", \"1h30m\")", v.Data)})
	}
}

// key returns the parts of a Table, ArrayTable or KeyValue node's key and
// the line of its first part.
func (idx *docIndex) key(e *unstable.Node) ([]string, int) {
	var parts []string
	line := 0
	it := e.Key()
	for it.Next() {
		n := it.Node()
		if line == 0 && n.Raw.Length > 0 {
			line = idx.line(int(n.Raw.Offset))
		}
		parts = append(parts, string(n.Data))
	}
	return parts, line
}

// resolve appends parts to base, entering the last element of each array
// of tables on the way, as TOML does for headers like [[hosts.dimensions]].
func (idx *docIndex) resolve(base string, parts []string) string {
	path := base
	for _, p := range parts {
		path = join(path, p)
		if n := idx.arrays[path]; n > 0 {
			path += "[" + strconv.Itoa(n-1) + "]"
		}
	}
	return path
}

func (idx *docIndex) record(path string, line int) {
	if line <= 0 {
		return
	}
	if _, ok := idx.lines[path]; !ok {
		idx.lines[path] = line
	}
	idx.byLine[line] = append(idx.byLine[line], path)
}

// line returns the 1-based line of a byte offset.
func (idx *docIndex) line(off int) int {
	return sort.Search(len(idx.starts), func(i int) bool { return idx.starts[i] > off })
}

// pathAt returns the indexed path ("hosts[1].dimensions[0].foo") of the
// key go-toml reports as parts at line, or the parts joined with dots.
func (idx *docIndex) pathAt(line int, parts []string) string {
	plain := strings.Join(parts, ".")
	for _, p := range idx.byLine[line] {
		if stripIndexes(p) == plain {
			return p
		}
	}
	// A key inside a table reported relative to it.
	for _, p := range idx.byLine[line] {
		if strings.HasSuffix(stripIndexes(p), "."+plain) {
			return p
		}
	}
	return plain
}

// lineOf returns the line of path, or of its nearest recorded parent.
func lineOf(lines map[string]int, path string) int {
	for path != "" {
		if l, ok := lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			return 0
		}
		path = path[:i]
	}
	return 0
}

func join(path, part string) string {
	if path == "" {
		return part
	}
	return path + "." + part
}

// stripIndexes removes array indexes: "hosts[0].id" -> "hosts.id".
func stripIndexes(path string) string {
	if !strings.Contains(path, "[") {
		return path
	}
	var b strings.Builder
	for i := 0; i < len(path); i++ {
		if path[i] == '[' {
			j := i + 1
			for j < len(path) && path[j] >= '0' && path[j] <= '9' {
				j++
			}
			if j > i+1 && j < len(path) && path[j] == ']' {
				i = j
				continue
			}
		}
		b.WriteByte(path[i])
	}
	return b.String()
}

// durationPaths collects the index-free key paths of Duration fields in t.
func durationPaths(t reflect.Type, prefix string, out map[string]struct{}) {
	for t.Kind() == reflect.Slice || t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == reflect.TypeOf(Duration{}) {
		out[prefix] = struct{}{}
		return
	}
	if t.Kind() != reflect.Struct {
		return
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if !f.IsExported() || name == "" || name == "-" {
			continue
		}
		durationPaths(f.Type, join(prefix, name), out)
	}
}
