package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/sidecache/sidecache/l2store/remote"
)

// A configuration file (--config, SIDECACHE_CONFIG) is a YAML mapping of
// flag names, without the dashes in front, to values:
//
//	l1-max-bytes: 128mb
//	l2: redis://cache:6379/0
//	stale-for: 30m
//	origin-rate: 200
//
// A list may stand for a comma-separated value. Flags on the command line
// win over the environment, which wins over the file.

// fileSetting is one setting of the configuration file.
type fileSetting struct {
	name, value string
	line        int
}

// readConfigFile reads path's settings, in the file's order. A key that is
// not a flag, a value that is not a scalar (or a list of them), or a key
// given twice is an error naming it and its line.
func readConfigFile(path string, fs *flag.FlagSet) ([]fileSetting, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("config file %s: %v", path, err)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil, nil // empty file
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("config file %s line %d: want a mapping of settings (name: value)", path, root.Line)
	}
	var out []fileSetting
	seen := map[string]bool{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		name := k.Value
		f := fs.Lookup(name)
		switch {
		case k.Kind != yaml.ScalarNode || f == nil || name == "config" || name == "version":
			return nil, fmt.Errorf("config file %s line %d: unknown setting %q (settings are the flags of sidecache -help, without the dashes)", path, k.Line, name)
		case seen[name]:
			return nil, fmt.Errorf("config file %s line %d: %q is set twice", path, k.Line, name)
		}
		seen[name] = true
		value, err := scalarValue(v)
		if err != nil {
			return nil, fmt.Errorf("config file %s line %d: %s: %v", path, v.Line, name, err)
		}
		out = append(out, fileSetting{name: name, value: value, line: v.Line})
	}
	return out, nil
}

// scalarValue returns a scalar's text, or a list of scalars joined by
// commas.
func scalarValue(n *yaml.Node) (string, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		return n.Value, nil
	case yaml.SequenceNode:
		parts := make([]string, 0, len(n.Content))
		for _, e := range n.Content {
			if e.Kind != yaml.ScalarNode || strings.Contains(e.Value, ",") {
				return "", errors.New("a list may only hold plain values without commas")
			}
			parts = append(parts, e.Value)
		}
		return strings.Join(parts, ","), nil
	}
	return "", errors.New("want a plain value or a list of them")
}

// applyConfigFile sets the flags not set on the command line or in the
// environment (set) from the file's settings.
func applyConfigFile(path string, fs *flag.FlagSet, set map[string]bool) error {
	settings, err := readConfigFile(path, fs)
	if err != nil {
		return err
	}
	for _, s := range settings {
		if set[s.name] {
			continue
		}
		if err := fs.Set(s.name, s.value); err != nil {
			return fmt.Errorf("config file %s line %d: invalid value %q for %s: %v", path, s.line, s.value, s.name, err)
		}
	}
	return nil
}

// secretFlags are the flags whose values are never logged.
var secretFlags = map[string]bool{"requirepass": true}

// urlFlags hold URLs whose user information is redacted in logs.
var urlFlags = map[string]bool{"origin-url": true}

// effective returns the configuration as name=value pairs in flag order,
// secrets redacted, for the start-up log and reload diffs. It reads c's
// fields through the flag set parseConfig made (a new flag set would reset
// them to their defaults).
func (c *config) effective() []fileSetting {
	var out []fileSetting
	c.fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "version" {
			return
		}
		v := f.Value.String()
		switch {
		case secretFlags[f.Name] && v != "":
			v = "(redacted)"
		case f.Name == "l2" && v != "":
			v = remote.Config{URL: v}.Redacted()
		case urlFlags[f.Name]:
			v = redactURLUser(v)
		}
		out = append(out, fileSetting{name: f.Name, value: v})
	})
	return out
}

// redactURLUser replaces the user information of a URL (and of each
// comma-separated host list form sidecache takes) with "xxxxx".
func redactURLUser(s string) string {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return s
	}
	at := strings.LastIndexByte(rest, '@')
	slash := strings.IndexByte(rest, '/')
	if at < 0 || (slash >= 0 && at > slash) {
		return s
	}
	var b bytes.Buffer
	b.WriteString(scheme)
	b.WriteString("://xxxxx@")
	b.WriteString(rest[at+1:])
	return b.String()
}
