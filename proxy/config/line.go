package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// withLine puts the line of the field a validation error names in front of
// its message ("invalid proxy config: line 12: pools[app].algorithm ..."),
// so that an operator finds it in the file. The field is the error's first
// word: a path such as pools[app].backends[0].address, where [app] is the
// element whose name is app and [0] the first element.
func withLine(data []byte, err error) error {
	msg, ok := strings.CutPrefix(err.Error(), ErrConfig.Error()+": ")
	if !ok || !errors.Is(err, ErrConfig) || strings.HasPrefix(msg, "line ") {
		return err
	}
	field, _, _ := strings.Cut(msg, " ")
	var root yaml.Node
	if yaml.Unmarshal(data, &root) != nil {
		return err
	}
	line := lineOf(&root, field)
	if line == 0 {
		return err
	}
	return fmt.Errorf("%w: line %d: %s", ErrConfig, line, msg)
}

// lineOf returns the line of the deepest node of path that exists; 0 when
// not even the first does.
func lineOf(root *yaml.Node, path string) int {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := 0
	for _, part := range strings.Split(path, ".") {
		name, key, hasKey := strings.Cut(part, "[")
		key = strings.TrimSuffix(key, "]")
		v := mapValue(n, name)
		if v == nil {
			return line
		}
		n, line = v, v.Line
		if !hasKey {
			continue
		}
		if v.Kind != yaml.SequenceNode {
			return line
		}
		var elem *yaml.Node
		if i, err := strconv.Atoi(key); err == nil && i >= 0 && i < len(v.Content) {
			elem = v.Content[i]
		} else {
			for _, e := range v.Content {
				if nm := mapValue(e, "name"); nm != nil && nm.Value == key {
					elem = e
					break
				}
			}
		}
		if elem == nil {
			return line
		}
		n, line = elem, elem.Line
	}
	return line
}

// mapValue returns the value of key in a mapping node, nil if none.
func mapValue(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}
