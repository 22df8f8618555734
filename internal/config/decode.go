package config

import (
	"encoding"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"reflect"
	"sort"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// Error is one problem in a configuration file, printed as FILE:LINE: key: message
// so that an admin can jump straight to it.
type Error struct {
	File string
	Line int    // 0 when the problem has no line (a key that is missing)
	Key  string // dotted path, e.g. "greylist.delay"
	Msg  string
}

func (e Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Key != "" {
		b.WriteString(": ")
		b.WriteString(e.Key)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in one file: the loader never stops at the first,
// so a config with three typos is fixed in one round, not three.
type Errors []Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// errorList collects errors while decoding and validating one file.
type errorList struct {
	file  string
	lines map[string]int // dotted key path -> line of its definition
	errs  Errors
}

func (l *errorList) add(key, format string, args ...any) {
	l.errs = append(l.errs, Error{File: l.file, Line: l.line(key), Key: key, Msg: fmt.Sprintf(format, args...)})
}

// line finds the line of key, or of its closest defined parent (a table header).
func (l *errorList) line(key string) int {
	for k := key; k != ""; {
		if n, ok := l.lines[k]; ok {
			return n
		}
		// Array elements are reported at the array's line.
		if i := strings.LastIndexAny(k, ".["); i >= 0 {
			k = k[:i]
		} else {
			k = ""
		}
	}
	return 0
}

func (l *errorList) err() error {
	if len(l.errs) == 0 {
		return nil
	}
	sort.SliceStable(l.errs, func(i, j int) bool { return l.errs[i].Line < l.errs[j].Line })
	return l.errs
}

// keyLines maps every key path defined in a TOML document to its line. The
// regular decoder knows values but not positions; this walk over the syntax tree
// supplies the positions.
func keyLines(data []byte) map[string]int {
	lines := map[string]int{}
	p := &unstable.Parser{}
	p.Reset(data)
	var table []string
	for p.NextExpression() {
		expr := p.Expression()
		switch expr.Kind {
		case unstable.Table, unstable.ArrayTable:
			table = keyParts(expr.Key())
			if k := expr.Key(); k.Next() {
				lines[strings.Join(table, ".")] = p.Shape(k.Node().Raw).Start.Line
			}
		case unstable.KeyValue:
			walkKeyValue(p, expr, table, lines)
		}
	}
	return lines
}

func walkKeyValue(p *unstable.Parser, kv *unstable.Node, table []string, lines map[string]int) {
	path := append(append([]string(nil), table...), keyParts(kv.Key())...)
	if k := kv.Key(); k.Next() {
		lines[strings.Join(path, ".")] = p.Shape(k.Node().Raw).Start.Line
	}
	if v := kv.Value(); v.Kind == unstable.InlineTable {
		it := v.Children()
		for it.Next() {
			walkKeyValue(p, it.Node(), path, lines)
		}
	}
}

func keyParts(it unstable.Iterator) []string {
	var parts []string
	for it.Next() {
		parts = append(parts, string(it.Node().Data))
	}
	return parts
}

// decodeFile parses data as TOML and decodes it into dst (a pointer to a struct
// already holding the defaults), collecting every error.
func decodeFile(file string, data []byte, dst any, el *errorList) {
	var doc map[string]any
	if err := toml.Unmarshal(data, &doc); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			line, _ := de.Position()
			el.errs = append(el.errs, Error{File: file, Line: line, Key: strings.Join(de.Key(), "."), Msg: de.Error()})
			return
		}
		el.errs = append(el.errs, Error{File: file, Msg: err.Error()})
		return
	}
	el.lines = keyLines(data)
	decodeStruct("", doc, reflect.ValueOf(dst).Elem(), el)
}

var (
	textUnmarshalerType = reflect.TypeOf((*encoding.TextUnmarshaler)(nil)).Elem()
	prefixType          = reflect.TypeOf(netip.Prefix{})
)

func decodeStruct(path string, m map[string]any, v reflect.Value, el *errorList) {
	fields := map[string]reflect.Value{}
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		name := t.Field(i).Tag.Get("toml")
		if name == "" || name == "-" {
			continue
		}
		fields[name] = v.Field(i)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		key := join(path, k)
		f, ok := fields[k]
		if !ok {
			el.add(key, "unknown key%s", suggest(k, fields))
			continue
		}
		decodeValue(key, m[k], f, el)
	}
}

func decodeValue(key string, raw any, v reflect.Value, el *errorList) {
	// netip.Prefix is a TextUnmarshaler too, but ParsePrefix gives the
	// friendlier rules (bare addresses, host bits) and messages.
	if v.Type() == prefixType {
		s, ok := raw.(string)
		if !ok {
			el.add(key, "expected a network as a string, got %s", typeName(raw))
			return
		}
		p, err := ParsePrefix(s)
		if err != nil {
			el.add(key, "%v", err)
			return
		}
		v.Set(reflect.ValueOf(p))
		return
	}
	if v.CanAddr() && v.Addr().Type().Implements(textUnmarshalerType) {
		s, ok := raw.(string)
		if !ok {
			el.add(key, "expected a string, got %s", typeName(raw))
			return
		}
		if err := v.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(s)); err != nil {
			el.add(key, "%v", err)
		}
		return
	}
	switch v.Kind() {
	case reflect.String:
		s, ok := raw.(string)
		if !ok {
			el.add(key, "expected a string, got %s", typeName(raw))
			return
		}
		v.SetString(s)
	case reflect.Bool:
		b, ok := raw.(bool)
		if !ok {
			el.add(key, "expected true or false, got %s", typeName(raw))
			return
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, ok := raw.(int64)
		if !ok {
			el.add(key, "expected an integer, got %s", typeName(raw))
			return
		}
		if v.Kind() == reflect.Int && (n > math.MaxInt32 || n < math.MinInt32) {
			el.add(key, "integer %d out of range", n)
			return
		}
		v.SetInt(n)
	case reflect.Slice:
		arr, ok := raw.([]any)
		if !ok {
			el.add(key, "expected an array, got %s", typeName(raw))
			return
		}
		out := reflect.MakeSlice(v.Type(), len(arr), len(arr))
		for i, e := range arr {
			decodeValue(fmt.Sprintf("%s[%d]", key, i), e, out.Index(i), el)
		}
		v.Set(out)
	case reflect.Struct:
		m, ok := raw.(map[string]any)
		if !ok {
			el.add(key, "expected a table, got %s", typeName(raw))
			return
		}
		decodeStruct(key, m, v, el)
	default:
		el.add(key, "cannot decode into %s", v.Type())
	}
}

func typeName(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	default:
		return fmt.Sprintf("%T", v)
	}
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// suggest names the known key closest to a typo, the most common config mistake.
func suggest(k string, fields map[string]reflect.Value) string {
	best, bestDist := "", 3
	for name := range fields {
		if d := editDistance(k, name); d < bestDist || (d == bestDist && name < best) {
			best, bestDist = name, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
