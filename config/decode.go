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

// problemsOf returns the Problems in err (joined, or wrapped as Load
// wraps them).
func problemsOf(err error) []*Problem {
	var ps []*Problem
	var walk func(error)
	walk = func(e error) {
		if p, ok := e.(*Problem); ok {
			ps = append(ps, p)
			return
		}
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		if u := errors.Unwrap(e); u != nil {
			walk(u)
		}
	}
	if err != nil {
		walk(err)
	}
	return ps
}

// withoutProblems returns data with the lines of err's decoding problems
// blanked (an unknown table's whole section), so that the rest of the file
// can be decoded and validated; ok is false when a problem has no line (a
// syntax error: nothing after it can be trusted).
func withoutProblems(data []byte, err error) ([]byte, bool) {
	ps := problemsOf(err)
	if len(ps) == 0 {
		return nil, false
	}
	lines := bytes.SplitAfter(data, []byte("\n"))
	blank := func(i int) {
		if i >= 0 && i < len(lines) {
			lines[i] = []byte("\n")
		}
	}
	for _, p := range ps {
		if p.Line <= 0 || p.Key == "" {
			return nil, false
		}
		blank(p.Line - 1)
		if p.Msg == "unknown table" {
			for i := p.Line; i < len(lines) && !bytes.HasPrefix(bytes.TrimSpace(lines[i]), []byte("[")); i++ {
				blank(i)
			}
		}
	}
	return bytes.Join(lines, nil), true
}

// mergeProblems joins the problems of a and b, in line order, dropping
// repeats (a key that failed to decode keeps only its decoding problem).
func mergeProblems(a, b error) error {
	ps := problemsOf(a)
	seen := map[string]bool{}
	for _, p := range ps {
		seen[p.Key] = true
	}
	for _, p := range problemsOf(b) {
		if !seen[p.Key] {
			ps = append(ps, p)
		}
	}
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].Line < ps[j].Line })
	return joinProblems(ps)
}

// docIndex records where each key path is set in a document.
type docIndex struct {
	lines  map[string]int   // key path -> line
	byLine map[int][]string // line -> key paths set there
	starts []int            // byte offset of each line start
	p      *unstable.Parser // the parser being walked
	arrays map[string]int   // array-of-tables path -> elements so far
	probs  []*Problem       // unknown keys, wrong types, bad durations
}

// decode decodes data strictly into c and records key lines in c.lines.
func decode(data []byte, c *Config) error {
	idx := indexDocument(data)
	c.lines = idx.lines
	if err := idx.p.Error(); err != nil {
		ps := idx.probs
		var pe *unstable.ParserError
		if errors.As(err, &pe) {
			p := &Problem{Msg: pe.Message}
			// The highlight is a subslice of data: its capacity gives its offset.
			if off := cap(data) - cap(pe.Highlight); off >= 0 && off <= len(data) {
				p.Line = idx.line(off)
				p.Column = off - idx.starts[p.Line-1] + 1
			}
			ps = append(ps, p)
		} else {
			ps = append(ps, &Problem{Msg: err.Error()})
		}
		return joinProblems(ps)
	}
	if len(idx.probs) > 0 {
		// Everything the walk found, at once; go-toml would stop at the
		// first, and gives bare integers to UnmarshalText without a position.
		return joinProblems(idx.probs)
	}
	err := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields().Decode(c)
	if err == nil {
		return nil
	}
	var ps []*Problem
	var sme *toml.StrictMissingError
	var de *toml.DecodeError
	switch {
	case errors.As(err, &sme):
		for i := range sme.Errors {
			e := &sme.Errors[i]
			line, col := e.Position()
			msg := "unknown key"
			if strings.Contains(e.Error(), "missing table") {
				msg = "unknown table"
			}
			ps = append(ps, &Problem{Key: idx.pathAt(line, e.Key()), Line: line, Column: col, Msg: msg})
		}
	case errors.As(err, &de):
		line, col := de.Position()
		ps = append(ps, &Problem{Key: idx.pathAt(line, de.Key()), Line: line, Column: col, Msg: friendlyMessage(de.Error())})
	default:
		ps = append(ps, &Problem{Msg: strings.TrimPrefix(err.Error(), "toml: ")})
	}
	return joinProblems(ps)
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
// path and checking every key and value against Config's fields, so that
// unknown keys, wrong types and bad durations are all reported at once
// (go-toml stops at the first). On a syntax error it stops; the decoder
// then reports that error.
func indexDocument(data []byte) *docIndex {
	idx := &docIndex{
		lines:  map[string]int{},
		byLine: map[int][]string{},
		starts: []int{0},
		p:      &unstable.Parser{},
		arrays: map[string]int{},
	}
	for i, b := range data {
		if b == '\n' {
			idx.starts = append(idx.starts, i+1)
		}
	}
	root := reflect.TypeFor[Config]()
	idx.p.Reset(data)
	var table string  // current table path, resolved ("hosts[0].dimensions[1]")
	tableType := root // its Go type; nil when unknown (already reported)
	for idx.p.NextExpression() {
		e := idx.p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			table, tableType = idx.header(e, root)
		case unstable.KeyValue:
			idx.keyValue(table, tableType, e)
		}
	}
	return idx
}

// header handles a [table] or [[array.table]] header and returns the
// table's path and Go type.
func (idx *docIndex) header(e *unstable.Node, root reflect.Type) (string, reflect.Type) {
	parts, nodes := idx.key(e)
	if len(parts) == 0 {
		return "", nil
	}
	line, col := idx.pos(nodes[0])
	path, t := "", root
	for i, part := range parts {
		path = join(path, part)
		last := i == len(parts)-1
		if last && e.Kind == unstable.ArrayTable {
			n := idx.arrays[path]
			idx.arrays[path] = n + 1
			path += "[" + strconv.Itoa(n) + "]"
		} else if n := idx.arrays[path]; n > 0 {
			path += "[" + strconv.Itoa(n-1) + "]"
		}
		if t == nil {
			continue
		}
		ft, ok := fieldType(t, part)
		if !ok {
			if t.Kind() == reflect.Struct {
				idx.add(stripLastIndex(path), line, col, "unknown table")
			}
			t = nil
			continue
		}
		isTables := ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct
		isTable := ft.Kind() == reflect.Struct && ft != reflect.TypeFor[Duration]()
		switch {
		case last && e.Kind == unstable.ArrayTable && !isTables:
			idx.add(stripLastIndex(path), line, col, "must be "+typeName(ft)+", not an array of tables")
			t = nil
		case !isTable && !isTables:
			idx.add(stripLastIndex(path), line, col, "must be "+typeName(ft)+", not a table")
			t = nil
		case isTables:
			t = ft.Elem()
		default:
			t = ft
		}
	}
	idx.record(path, line)
	return path, t
}

// keyValue records and checks a key-value expression (top level or inside
// an inline table) in the table at path, of Go type t (nil: unchecked).
func (idx *docIndex) keyValue(path string, t reflect.Type, e *unstable.Node) {
	parts, nodes := idx.key(e)
	if len(parts) == 0 {
		return
	}
	line, _ := idx.pos(nodes[0])
	for i, part := range parts {
		path = join(path, part)
		idx.record(path, line)
		if t == nil {
			continue
		}
		ft, ok := fieldType(t, part)
		if !ok {
			if t.Kind() == reflect.Struct && t != reflect.TypeFor[Duration]() {
				l, c := idx.pos(nodes[i])
				idx.add(path, l, c, "unknown key")
			}
			t = nil
			continue
		}
		if i < len(parts)-1 && ft.Kind() != reflect.Struct {
			ft = nil // dotted into a non-table: go-toml reports it
		}
		t = ft
	}
	idx.value(path, t, e.Value(), line)
}

// value records an array's elements and an inline table's keys, and checks
// v against the Go type t (nil: unchecked).
func (idx *docIndex) value(path string, t reflect.Type, v *unstable.Node, line int) {
	if !v.Valid() {
		return
	}
	col := 0
	if v.Raw.Length > 0 {
		line, col = idx.pos(v)
	}
	if t != nil {
		if msg := mismatch(t, v); msg != "" {
			idx.add(path, line, col, msg)
			return
		}
	}
	switch v.Kind {
	case unstable.Array:
		var et reflect.Type
		if t != nil && t.Kind() == reflect.Slice {
			et = t.Elem()
		}
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
				l, _ = idx.pos(n)
			}
			idx.record(el, l)
			idx.value(el, et, n, l)
		}
	case unstable.InlineTable:
		it := v.Children()
		for it.Next() {
			if n := it.Node(); n.Kind == unstable.KeyValue {
				idx.keyValue(path, t, n)
			}
		}
	}
}

// mismatch returns why v cannot be decoded into t, or "".
func mismatch(t reflect.Type, v *unstable.Node) string {
	if t == reflect.TypeFor[Duration]() {
		if v.Kind != unstable.String {
			return fmt.Sprintf("must be a duration string such as \"15s\" or \"1h30m\", not a TOML %s", kindName(v.Kind))
		}
		if _, err := time.ParseDuration(string(v.Data)); err != nil {
			return fmt.Sprintf("invalid duration %q (want e.g. \"15s\", \"1h30m\")", v.Data)
		}
		return ""
	}
	var want unstable.Kind
	switch t.Kind() {
	case reflect.String:
		want = unstable.String
	case reflect.Int, reflect.Int64:
		want = unstable.Integer
	case reflect.Bool:
		want = unstable.Bool
	case reflect.Slice:
		want = unstable.Array
	case reflect.Struct:
		want = unstable.InlineTable
	default:
		return ""
	}
	if v.Kind == want {
		return ""
	}
	return fmt.Sprintf("must be %s, not a TOML %s", typeName(t), kindName(v.Kind))
}

func typeName(t reflect.Type) string {
	if t == reflect.TypeFor[Duration]() {
		return "a duration string"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int64:
		return "an integer"
	case reflect.Bool:
		return "a boolean"
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Struct {
			return "an array of tables"
		}
		return "an array of " + strings.TrimPrefix(strings.TrimPrefix(typeName(t.Elem()), "a "), "an ") + "s"
	}
	return "a table"
}

func kindName(k unstable.Kind) string {
	switch k {
	case unstable.InlineTable:
		return "inline table"
	case unstable.LocalDate, unstable.LocalTime, unstable.LocalDateTime, unstable.DateTime:
		return "date/time"
	}
	return strings.ToLower(k.String())
}

// fieldType returns the type of the field of struct t tagged name.
func fieldType(t reflect.Type, name string) (reflect.Type, bool) {
	if t.Kind() != reflect.Struct || t == reflect.TypeFor[Duration]() {
		return nil, false
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if f.IsExported() && tag == name {
			return f.Type, true
		}
	}
	return nil, false
}

func (idx *docIndex) add(key string, line, col int, msg string) {
	idx.probs = append(idx.probs, &Problem{Key: key, Line: line, Column: col, Msg: msg})
}

// pos returns the line and column where n starts.
func (idx *docIndex) pos(n *unstable.Node) (int, int) {
	off := int(n.Raw.Offset)
	l := idx.line(off)
	return l, off - idx.starts[l-1] + 1
}

// stripLastIndex removes a trailing "[n]".
func stripLastIndex(path string) string {
	if i := strings.LastIndexByte(path, '['); i > 0 && strings.HasSuffix(path, "]") {
		return path[:i]
	}
	return path
}

// key returns the parts of a Table, ArrayTable or KeyValue node's key and
// their nodes.
func (idx *docIndex) key(e *unstable.Node) ([]string, []*unstable.Node) {
	var parts []string
	var nodes []*unstable.Node
	it := e.Key()
	for it.Next() {
		n := it.Node()
		parts = append(parts, string(n.Data))
		nodes = append(nodes, n)
	}
	return parts, nodes
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
