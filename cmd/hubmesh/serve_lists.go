package main

import (
	"strings"

	"github.com/spf13/pflag"
)

// repeatableSettings are the serve settings whose flag may be given more
// than once (--sync A --sync B); their environment twin and the config
// file take a comma-separated list.
var repeatableSettings = map[string]bool{"sync": true, "upstream": true, "federate": true, "federate-namespaces": true}

// addSettingFlag registers the flag of s with its default def.
func addSettingFlag(f *pflag.FlagSet, s setting, def string, usage string) {
	if repeatableSettings[s.flag] {
		f.StringArray(s.flag, splitList(def), usage+"; repeatable")
		return
	}
	f.String(s.flag, def, usage)
}

// settingFlag reads the value of the flag of setting name as its set
// function takes it: a repeatable flag's values joined by commas.
func settingFlag(f *pflag.FlagSet, name string) string {
	if repeatableSettings[name] {
		v, _ := f.GetStringArray(name)
		return strings.Join(v, ",")
	}
	v, _ := f.GetString(name)
	return v
}
