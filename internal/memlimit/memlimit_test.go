package memlimit

import (
	"testing"
	"testing/fstest"
)

func TestCgroup(t *testing.T) {
	cases := []struct {
		name  string
		files fstest.MapFS
		want  int64
		ok    bool
	}{
		{"v2 own cgroup", fstest.MapFS{
			"proc/self/cgroup":                          {Data: []byte("0::/kubepods/pod1/c1\n")},
			"sys/fs/cgroup/kubepods/pod1/c1/memory.max": {Data: []byte("536870912\n")},
			"sys/fs/cgroup/memory.max":                  {Data: []byte("max\n")},
		}, 512 << 20, true},
		{"v2 namespaced root", fstest.MapFS{
			"proc/self/cgroup":         {Data: []byte("0::/\n")},
			"sys/fs/cgroup/memory.max": {Data: []byte("1073741824\n")},
		}, 1 << 30, true},
		{"v2 unlimited", fstest.MapFS{
			"proc/self/cgroup":         {Data: []byte("0::/\n")},
			"sys/fs/cgroup/memory.max": {Data: []byte("max\n")},
		}, 0, false},
		{"v1 path not visible, root used", fstest.MapFS{
			"proc/self/cgroup":                           {Data: []byte("5:freezer:/\n4:memory:/process_api/2a23\n0::/\n")},
			"sys/fs/cgroup/memory/memory.limit_in_bytes": {Data: []byte("268435456\n")},
		}, 256 << 20, true},
		{"v1 unlimited", fstest.MapFS{
			"proc/self/cgroup":                           {Data: []byte("4:memory:/\n")},
			"sys/fs/cgroup/memory/memory.limit_in_bytes": {Data: []byte("9223372036854771712\n")},
		}, 0, false},
		{"v1 combined controllers", fstest.MapFS{
			"proc/self/cgroup": {Data: []byte("3:cpu,memory:/a\n")},
			"sys/fs/cgroup/memory/a/memory.limit_in_bytes": {Data: []byte("1000000\n")},
		}, 1000000, true},
		{"garbage", fstest.MapFS{
			"sys/fs/cgroup/memory.max": {Data: []byte("-5\n")},
		}, 0, false},
		{"nothing", fstest.MapFS{}, 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := Cgroup(c.files)
			if got != c.want || ok != c.ok {
				t.Fatalf("Cgroup = %d, %v; want %d, %v", got, ok, c.want, c.ok)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	cases := []struct {
		configured int64
		env        string
		cgroup     int64
		want       int64
		src        Source
	}{
		{512 << 20, "1GiB", 4 << 30, 512 << 20, FromConfig},
		{0, "1GiB", 4 << 30, 0, FromEnv},
		{0, "", 1000, 900, FromCgroup},
		{0, " ", 0, 0, FromNowhere},
		{-1, "", 0, 0, FromNowhere},
	}
	for _, c := range cases {
		got, src := Resolve(c.configured, c.env, c.cgroup)
		if got != c.want || src != c.src {
			t.Errorf("Resolve(%d, %q, %d) = %d, %s; want %d, %s", c.configured, c.env, c.cgroup, got, src, c.want, c.src)
		}
	}
}
