package metricdoc

import (
	"bytes"
	"io"
	"strings"

	"github.com/VictoriaMetrics/metrics"
)

// WriteProcessMetrics writes the Go runtime and process figures of
// metrics.WriteProcessMetrics (go_goroutines, process_resident_memory_bytes,
// ...) with a HELP and a TYPE line for each family. Three figures the
// library names with a _count suffix, which the text format reserves for
// histograms and summaries, are renamed: the counters go_cgo_calls_total
// and go_gc_forced_total, and the gauge go_cpus. The library's process_io_*
// figures are counts since the start and are typed counter (it says gauge).
func WriteProcessMetrics(w io.Writer) {
	var raw bytes.Buffer
	metrics.WriteProcessMetrics(&raw)
	annotate(w, raw.Bytes(), processFamily, processRename)
}

// processRename gives the library's figures that end in _count a name
// Prometheus does not take for part of a histogram or summary.
func processRename(name string) string {
	switch name {
	case "go_cgo_calls_count":
		return "go_cgo_calls_total"
	case "go_gc_forced_count":
		return "go_gc_forced_total"
	case "go_cpu_count":
		return "go_cpus"
	}
	return name
}

// processFamily gives a process family's metadata: from processDoc, else
// (a figure a later library or Go version adds) a type read off the name.
func processFamily(name string) (family, bool) {
	if f, ok := processDoc(name); ok {
		return f, true
	}
	if strings.HasSuffix(name, "_bucket") || strings.HasSuffix(name, "_sum") || strings.HasSuffix(name, "_count") {
		return family{}, false // resolve then tries the histogram's own name
	}
	typ := typeGauge
	if strings.HasSuffix(name, "_total") {
		typ = typeCounter
	}
	return family{typ: typ, help: "Go runtime or process figure " + name + " (github.com/VictoriaMetrics/metrics)."}, true
}

// processDoc describes the families metrics.WriteProcessMetrics writes on
// Linux (v1.45.0). It is a function, not a table in a variable, so that
// nothing in the package is shared state.
func processDoc(name string) (family, bool) {
	c := func(help string) (family, bool) { return family{typeCounter, help}, true }
	g := func(help string) (family, bool) { return family{typeGauge, help}, true }
	h := func(help string) (family, bool) { return family{typeHistogram, help}, true }
	switch name {
	// runtime.MemStats
	case "go_memstats_alloc_bytes":
		return g("Bytes of allocated heap objects.")
	case "go_memstats_alloc_bytes_total":
		return c("Bytes allocated for heap objects since the process started.")
	case "go_memstats_buck_hash_sys_bytes":
		return g("Bytes of memory in profiling bucket hash tables.")
	case "go_memstats_frees_total":
		return c("Heap objects freed since the process started.")
	case "go_memstats_gc_cpu_fraction":
		return g("Fraction of the available CPU time used by the garbage collector since the process started.")
	case "go_memstats_gc_sys_bytes":
		return g("Bytes of memory in garbage collection metadata.")
	case "go_memstats_heap_alloc_bytes":
		return g("Bytes of allocated heap objects.")
	case "go_memstats_heap_idle_bytes":
		return g("Bytes in idle (unused) heap spans.")
	case "go_memstats_heap_inuse_bytes":
		return g("Bytes in in-use heap spans.")
	case "go_memstats_heap_objects":
		return g("Number of allocated heap objects.")
	case "go_memstats_heap_released_bytes":
		return g("Bytes of physical memory returned to the operating system.")
	case "go_memstats_heap_sys_bytes":
		return g("Bytes of heap memory obtained from the operating system.")
	case "go_memstats_last_gc_time_seconds":
		return g("Time the last garbage collection finished, in seconds since the Unix epoch.")
	case "go_memstats_lookups_total":
		return c("Pointer lookups performed by the runtime since the process started.")
	case "go_memstats_mallocs_total":
		return c("Heap objects allocated since the process started.")
	case "go_memstats_mcache_inuse_bytes":
		return g("Bytes of allocated mcache structures.")
	case "go_memstats_mcache_sys_bytes":
		return g("Bytes of memory obtained from the operating system for mcache structures.")
	case "go_memstats_mspan_inuse_bytes":
		return g("Bytes of allocated mspan structures.")
	case "go_memstats_mspan_sys_bytes":
		return g("Bytes of memory obtained from the operating system for mspan structures.")
	case "go_memstats_next_gc_bytes":
		return g("Heap size the next garbage collection aims for.")
	case "go_memstats_other_sys_bytes":
		return g("Bytes of memory in miscellaneous off-heap runtime allocations.")
	case "go_memstats_stack_inuse_bytes":
		return g("Bytes in stack spans.")
	case "go_memstats_stack_sys_bytes":
		return g("Bytes of stack memory obtained from the operating system.")
	case "go_memstats_sys_bytes":
		return g("Total bytes of memory obtained from the operating system.")
	// runtime
	case "go_cgo_calls_total":
		return c("Cgo calls made by the process since it started.")
	case "go_cpus":
		return g("Logical CPUs usable by the process.")
	case "go_gc_duration_seconds":
		return family{typeSummary, "Garbage collection pause durations, in seconds."}, true
	case "go_gc_forced_total":
		return c("Garbage collections forced by the application (runtime.GC) since the process started.")
	case "go_gomaxprocs":
		return g("Value of GOMAXPROCS: the most OS threads running Go code at once.")
	case "go_goroutines":
		return g("Number of goroutines that currently exist.")
	case "go_threads":
		return g("Number of OS threads created by the runtime.")
	case "go_info":
		return g("Go version the binary was built with (always 1).")
	case "go_info_ext":
		return g("Compiler, GOARCH, GOOS and GOROOT of the binary (always 1).")
	// runtime/metrics
	case "go_sched_latencies_seconds":
		return h("Time goroutines spent runnable before running, in seconds.")
	case "go_mutex_wait_seconds_total":
		return c("Time goroutines spent blocked on a sync.Mutex, sync.RWMutex or runtime-internal lock, in seconds.")
	case "go_gc_mark_assist_cpu_seconds_total":
		return c("CPU time goroutines spent helping the garbage collector mark, in seconds.")
	case "go_gc_cpu_seconds_total":
		return c("CPU time spent in garbage collection, in seconds.")
	case "go_gc_pauses_seconds":
		return h("Stop-the-world garbage collection pause durations, in seconds.")
	case "go_scavenge_cpu_seconds_total":
		return c("CPU time spent returning memory to the operating system, in seconds.")
	case "go_memlimit_bytes":
		return g("The Go runtime's soft memory limit (GOMEMLIMIT), in bytes.")
	// /proc/self
	case "process_cpu_seconds_system_total":
		return c("CPU time the process spent in the kernel, in seconds.")
	case "process_cpu_seconds_total":
		return c("CPU time the process used (user and system), in seconds.")
	case "process_cpu_seconds_user_total":
		return c("CPU time the process spent in user space, in seconds.")
	case "process_major_pagefaults_total":
		return c("Page faults of the process that needed disk IO.")
	case "process_minor_pagefaults_total":
		return c("Page faults of the process resolved without disk IO.")
	case "process_num_threads":
		return g("Number of OS threads in the process.")
	case "process_resident_memory_bytes":
		return g("Resident memory size of the process, in bytes.")
	case "process_start_time_seconds":
		return g("Start time of the process, in seconds since the Unix epoch.")
	case "process_virtual_memory_bytes":
		return g("Virtual memory size of the process, in bytes.")
	case "process_virtual_memory_peak_bytes":
		return g("Peak virtual memory size of the process, in bytes.")
	case "process_resident_memory_peak_bytes":
		return g("Peak resident memory size of the process, in bytes.")
	case "process_resident_memory_anon_bytes":
		return g("Resident anonymous memory of the process, in bytes.")
	case "process_resident_memory_file_bytes":
		return g("Resident file-backed memory of the process, in bytes.")
	case "process_resident_memory_shared_bytes":
		return g("Resident shared memory of the process, in bytes.")
	case "process_io_read_bytes_total":
		return c("Bytes the process read through read-like system calls.")
	case "process_io_written_bytes_total":
		return c("Bytes the process wrote through write-like system calls.")
	case "process_io_read_syscalls_total":
		return c("Read-like system calls of the process.")
	case "process_io_write_syscalls_total":
		return c("Write-like system calls of the process.")
	case "process_io_storage_read_bytes_total":
		return c("Bytes the process caused to be read from storage.")
	case "process_io_storage_written_bytes_total":
		return c("Bytes the process caused to be written to storage.")
	case "process_max_fds":
		return g("Most open file descriptors the process may have.")
	case "process_open_fds":
		return g("Open file descriptors of the process.")
	case "process_pressure_cpu_waiting_seconds_total":
		return c("Time some of the process's cgroup tasks waited for CPU (PSI), in seconds.")
	case "process_pressure_cpu_stalled_seconds_total":
		return c("Time all of the process's cgroup tasks were stalled on CPU (PSI), in seconds.")
	case "process_pressure_io_waiting_seconds_total":
		return c("Time some of the process's cgroup tasks waited for IO (PSI), in seconds.")
	case "process_pressure_io_stalled_seconds_total":
		return c("Time all of the process's cgroup tasks were stalled on IO (PSI), in seconds.")
	case "process_pressure_memory_waiting_seconds_total":
		return c("Time some of the process's cgroup tasks waited for memory (PSI), in seconds.")
	case "process_pressure_memory_stalled_seconds_total":
		return c("Time all of the process's cgroup tasks were stalled on memory (PSI), in seconds.")
	case "process_cgroup_cpu_throttled_seconds_total":
		return c("Time the process's cgroup was throttled by its CPU limit, in seconds.")
	}
	return family{}, false
}
