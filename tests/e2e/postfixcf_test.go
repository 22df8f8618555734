package e2e

import (
	"fmt"
	"strings"
	"testing"
)

// The shipped configs/main.cf and configs/master.cf snippets are read with
// Postfix's own line rules, so the e2e instance runs exactly what an admin
// would paste, with only addresses and ports changed.

// cfParam is one main.cf parameter assignment.
type cfParam struct {
	Name, Value string
}

// parseMainCF reads main.cf text: a logical line starts with a non-space
// character, a line starting with whitespace continues it, lines starting
// with '#' and blank lines are ignored (also between continuation lines, as
// in Postfix). Values have their whitespace runs collapsed to one space.
func parseMainCF(text string) ([]cfParam, error) {
	var out []cfParam
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimRight(line, " \t\r")
		trimmed := strings.TrimLeft(line, " \t")
		if trimmed == "" || trimmed[0] == '#' {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if len(out) == 0 {
				return nil, fmt.Errorf("main.cf:%d: continuation line without a parameter", n+1)
			}
			p := &out[len(out)-1]
			p.Value = strings.TrimSpace(p.Value + " " + trimmed)
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return nil, fmt.Errorf("main.cf:%d: expected name = value, got %q", n+1, line)
		}
		out = append(out, cfParam{Name: name, Value: strings.TrimSpace(value)})
	}
	for i := range out {
		out[i].Value = strings.Join(strings.Fields(out[i].Value), " ")
	}
	return out, nil
}

// commentedParam finds a parameter the snippet ships commented out
// ("#name =" followed by "#    continuation" lines) and returns its value.
func commentedParam(text, name string) (string, bool) {
	lines := strings.Split(text, "\n")
	for i, line := range lines {
		l := strings.TrimRight(line, " \t\r")
		if !strings.HasPrefix(l, "#") {
			continue
		}
		n, v, ok := strings.Cut(l[1:], "=")
		if !ok || strings.TrimSpace(n) != name || strings.HasPrefix(l[1:], " ") {
			continue
		}
		value := strings.TrimSpace(v)
		for _, next := range lines[i+1:] {
			next = strings.TrimRight(next, " \t\r")
			if len(next) < 2 || next[0] != '#' || (next[1] != ' ' && next[1] != '\t') {
				break
			}
			value += " " + strings.TrimSpace(next[1:])
		}
		return strings.Join(strings.Fields(value), " "), true
	}
	return "", false
}

// masterEntry is one master.cf service: its eight fields and its
// continuation lines (the -o options) as written.
type masterEntry struct {
	Fields []string
	Cont   []string
}

func parseMasterCF(text string) ([]masterEntry, error) {
	var out []masterEntry
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimRight(line, " \t\r")
		trimmed := strings.TrimLeft(line, " \t")
		if trimmed == "" || trimmed[0] == '#' {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if len(out) == 0 {
				return nil, fmt.Errorf("master.cf:%d: continuation line without a service", n+1)
			}
			out[len(out)-1].Cont = append(out[len(out)-1].Cont, trimmed)
			continue
		}
		f := strings.Fields(line)
		if len(f) < 8 {
			return nil, fmt.Errorf("master.cf:%d: want 8 fields, got %d in %q", n+1, len(f), line)
		}
		out = append(out, masterEntry{Fields: append(f[:7:7], strings.Join(f[7:], " "))})
	}
	return out, nil
}

func (e masterEntry) String() string {
	var b strings.Builder
	b.WriteString(strings.Join(e.Fields, "\t"))
	b.WriteString("\n")
	for _, c := range e.Cont {
		b.WriteString("  " + c + "\n")
	}
	return b.String()
}

func TestParseMainCF(t *testing.T) {
	text := "# comment\na = 1\nb =\n    x,\n\n    # inner comment\n    y\n#c =\n#    z\nd=e=f\n"
	got, err := parseMainCF(text)
	if err != nil {
		t.Fatal(err)
	}
	want := []cfParam{{"a", "1"}, {"b", "x, y"}, {"d", "e=f"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("parseMainCF = %v, want %v", got, want)
	}
	if v, ok := commentedParam(text, "c"); !ok || v != "z" {
		t.Errorf("commentedParam(c) = %q, %v; want \"z\", true", v, ok)
	}
	if _, ok := commentedParam(text, "comment"); ok {
		t.Errorf("commentedParam found a parameter in a prose comment")
	}
	if _, err := parseMainCF("  orphan\n"); err == nil {
		t.Errorf("parseMainCF accepted a continuation line without a parameter")
	}
}

func TestParseMasterCF(t *testing.T) {
	got, err := parseMasterCF("# x\nsubmission inet n - y - - smtpd\n  -o a=b\n  -o c=d\npickup unix n - y 60 1 pickup\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Fields[0] != "submission" || got[0].Fields[4] != "y" || len(got[0].Cont) != 2 || got[1].Fields[7] != "pickup" {
		t.Errorf("parseMasterCF = %+v", got)
	}
	if _, err := parseMasterCF("smtp inet n -\n"); err == nil {
		t.Errorf("parseMasterCF accepted a short line")
	}
}

func FuzzParseMainCF(f *testing.F) {
	f.Add("a = 1\nb =\n  c\n#d =\n#  e\n")
	f.Add("smtpd_recipient_restrictions =\n    permit_mynetworks,\n    check_policy_service { inet:127.0.0.1:10040, timeout=10s }\n")
	f.Add(" x\n")
	f.Fuzz(func(t *testing.T, text string) {
		ps, err := parseMainCF(text)
		if err != nil {
			return
		}
		for _, p := range ps {
			if p.Name == "" || strings.ContainsAny(p.Name, " \t\n=") {
				t.Fatalf("bad parameter name %q", p.Name)
			}
			if strings.Contains(p.Value, "\n") {
				t.Fatalf("value with a newline: %q", p.Value)
			}
		}
		_, _ = commentedParam(text, "a")
	})
}

func FuzzParseMasterCF(f *testing.F) {
	f.Add("submission inet n - y - - smtpd\n  -o a=b\n")
	f.Add("a b c d e f g h i j\n")
	f.Fuzz(func(t *testing.T, text string) {
		es, err := parseMasterCF(text)
		if err != nil {
			return
		}
		for _, e := range es {
			if len(e.Fields) != 8 {
				t.Fatalf("entry with %d fields", len(e.Fields))
			}
		}
	})
}
