"""benchmark_model output parser, on outputs of several versions copied verbatim from public reports.

Sources (each fixture is the text as posted, cut where the post was cut):
- CPU, TF 2.x with op profiling on RISC-V QEMU: a Yocto meta-layer README (benchmark of mobilenet_v1_1.0_224).
- XNNPACK, Raspberry Pi: google/XNNPACK issue #999.
- GPU delegate (OpenCL), Android: tensorflow/tensorflow issue #43541.
- NNAPI, logcat lines with timestamps (benchmark APK): tensorflow/tensorflow issue #56301.
- TF 1.x ("Average inference timings in us: Warmup: ..., no stats: ..."), Android: yuenshome.github.io issue #77.
- Failures: tensorflow/tensorflow issue #56166 (XNNPACK), ARM-software/armnn issue #716 (external delegate).
- Percentile stats lines (newer builds, logcat): a TFLite logcat parsing guide.
"""
import pytest

from device_profiler.adb import (BenchmarkFailed, benchmark_command, cpu_mask, failure_message,
                                 parse_benchmark_output, parse_cpus, _stats)
from device_profiler.errors import UsageError

CPU_RISCV = """\
STARTING!
Log parameter values verbosely: [0]
Num threads: [4]
Graph: [./mobilenet_v1_1.0_224.tflite]
Enable op profiling: [1]
#threads used for CPU inference: [4]
Loaded model ./mobilenet_v1_1.0_224.tflite
The input model file size (MB): 16.9008
Initialized session in 17.187ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=1 curr=3512391

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=2990275 curr=2913402 min=2727568 max=3189954 avg=2.95034e+06 std=109798

Inference timings in us: Init: 17187, First inference: 3512391, Warmup (avg): 3.51239e+06, Inference (avg): 2.95034e+06
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
Memory footprint delta from the start of the tool (MB): init=4.21094 overall=46.0859
Profiling Info for Benchmark Initialization:
============================== Run Order ==============================
\t             [node type]\t          [start]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t         AllocateTensors\t            0.000\t    1.356\t    1.356\t100.000%\t100.000%\t     0.000\t        1\tAllocateTensors/0
"""

XNNPACK_PI = """\
pi@raspberrypi:~/aXeleRate/example_scripts/tensorflow_lite/detector $ ./benchmark_model --graph=yolo_best_recall_int8_static.tflite --use_xnnpack=true --num_threads=4STARTING!
Log parameter values verbosely: [0]
Num threads: [4]
Graph: [yolo_best_recall_int8_static.tflite]
#threads used for CPU inference: [4]
Use xnnpack: [1]
Loaded model yolo_best_recall_int8_static.tflite
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
XNNPACK delegate created.
Explicitly applied XNNPACK delegate, and the model graph will be partially executed by the delegate w/ 1 delegate kernels.
The input model file size (MB): 3.67827
Initialized session in 49.438ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=10 first=65683 curr=53045 min=52869 max=65683 avg=54366.2 std=3778

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=54830 curr=53318 min=52522 max=113361 avg=55744.2 std=9900

Inference timings in us: Init: 49438, First inference: 65683, Warmup (avg): 54366.2, Inference (avg): 55744.2
Note: as the benchmark tool itself affects memory footpr"""

GPU_ANDROID = """\
 adb shell /data/local/tmp/tflite/android_arm_benchmark_model \\
  --num_threads=4 \\
  --graph=/data/local/tmp/tflite/denoising_32bit.tflite \\
  --warmup_runs=1 \\
  --num_runs=50  \\
  --use_gpu=true  \\
  --enable_op_profiling=true
STARTING!
Log parameter values verbosely: [0]
Min num runs: [50]
Num threads: [4]
Min warmup runs: [1]
Graph: [/data/local/tmp/tflite/denoising_32bit.tflite]
Enable op profiling: [1]
#threads used for CPU inference: [4]
Use gpu: [1]
Loaded model /data/local/tmp/tflite/denoising_32bit.tflite
INFO: Initialized TensorFlow Lite runtime.
INFO: Created TensorFlow Lite delegate for GPU.
INFO: Initialized OpenCL-based API.
INFO: Created 1 GPU delegate kernels.
Explicitly applied GPU delegate, and the model graph will be completely executed by the delegate.
The input model file size (MB): 7.07479
Initialized session in 870.557ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=4 first=130565 curr=120829 min=117370 max=130565 avg=122373 std=4930

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=119212 curr=118055 min=113737 max=124776 avg=119375 std=1948

Inference timings in us: Init: 870557, First inference: 130565, Warmup (avg): 122373, Inference (avg): 119375
Note: as t"""

NNAPI_LOGCAT = """\
05-30 15:16:44.857  3380  3380 I tflite  : Explicitly applied NNAPI delegate, and the model graph will be partially executed by the delegate w/ 44 delegate kernels.
05-30 15:16:44.858  3380  3380 I tflite  : The input model file size (MB): 0.113392
05-30 15:16:44.858  3380  3380 I tflite  : Initialized session in 126.059ms.
05-30 15:16:44.858  3380  3380 I tflite  : Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
05-30 15:16:45.362  3380  3380 I tflite  : count=40 first=32942 curr=12594 min=11340 max=32942 avg=12581.9 std=3331
05-30 15:16:45.362  3380  3380 I tflite  : Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
05-30 15:16:46.365  3380  3380 I tflite  : count=75 first=12840 curr=11853 min=11787 max=13649 avg=12167.6 std=325
05-30 15:16:46.366  3380  3380 I tflite  : Inference timings in us: Init: 126059, First inference: 32942, Warmup (avg): 12581.9, Inference (avg): 12167.6
05-30 15:16:46.366  3380  3380 I tflite  : Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
"""

TF1_ANDROID = """\
Loaded model /data/local/tmp/tflite/tfmodel/mobilenet_v1_1.0_224_quant.tflite
resolved reporter
Initialized session in 9.933ms
Running benchmark for at least 4 iterations and at least 0.5 seconds
count=7 first=127425 curr=66709 min=66709 max=127425 avg=76605.9 std=20944

Running benchmark for at least 10 iterations and at least 1 seconds
count=15 first=66753 curr=66800 min=66699 max=66838 avg=66767.6 std=39

Average inference timings in us: Warmup: 76605.9, Init: 9933, no stats: 66767.6
"""

FAIL_XNNPACK = """\
STARTING!
Log parameter values verbosely: [0]
Graph: [pruning_model.tflite]
Use xnnpack: [1]
Loaded model pruning_model.tflite
INFO: Initialized TensorFlow Lite runtime.
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
XNNPACK delegate created.
Failed to apply XNNPACK delegate.
Benchmarking failed.
"""

FAIL_EXTERNAL = """\
STARTING!
Log parameter values verbosely: [0]
Num threads: [6]
Graph: [mobilenet.tflite]
#threads used for CPU inference: [6]
External delegate path: [/mnt/sd/aarch64_build/delegate/libarmnnDelegate.so]
External delegate options: [backends:CpuAcc]
Loaded model mobilenet.tflite
INFO: TfLiteArmnnDelegate: Created TfLite ArmNN delegate.
EXTERNAL delegate created.
Failed to apply EXTERNAL delegate.
Benchmarking failed.
"""

PERCENTILE_LINES = [
    "I tflite  : count=3 first=235158 curr=200386 min=199462 max=235158 avg=211669 std=16613 "
    "p5=199462 median=200386 p95=235158",
    "I tflite  : count=25 first=187533 curr=140990 min=140071 max=195121 avg=145528 std=13583 "
    "p5=140545 median=141253 p95=187533",
]


def test_cpu_short_warmup_form_and_e_notation():
    r = parse_benchmark_output(CPU_RISCV)
    assert r.warmup.count == 1 and r.warmup.min == r.warmup.max == r.warmup.avg == 3512391 and r.warmup.std == 0
    inf = r.inference
    assert (inf.count, inf.first, inf.min, inf.max, inf.avg, inf.std) == (50, 2990275, 2727568, 3189954, 2950340, 109798)
    assert inf.median is None  # this build prints no percentiles
    assert (r.init_us, r.first_inference_us, r.warmup_avg_us, r.inference_avg_us) == (17187, 3512391, 3512390, 2950340)
    assert r.inference.ms() == {"min": 2727.568, "median": None, "mean": 2950.34, "std": 109.798, "count": 50,
                                "max": 3189.954, "first": 2990.275}
    assert r.delegate is None


def test_xnnpack_partial_delegation():
    r = parse_benchmark_output(XNNPACK_PI)
    assert (r.warmup.count, r.warmup.avg, r.inference.count, r.inference.min, r.inference.avg) == (10, 54366.2, 50, 52522, 55744.2)
    assert r.init_us == 49438 and r.inference_avg_us == 55744.2
    assert r.delegate.startswith("Explicitly applied XNNPACK delegate, and the model graph will be partially")


def test_gpu_delegate_android():
    r = parse_benchmark_output(GPU_ANDROID)
    assert (r.warmup.count, r.warmup.min, r.warmup.std) == (4, 117370, 4930)
    assert (r.inference.count, r.inference.min, r.inference.max, r.inference.avg, r.inference.std) == (50, 113737, 124776, 119375, 1948)
    assert (r.init_us, r.first_inference_us, r.warmup_avg_us) == (870557, 130565, 122373)
    assert "GPU delegate, and the model graph will be completely executed" in r.delegate


def test_logcat_prefixes():
    r = parse_benchmark_output(NNAPI_LOGCAT)
    assert (r.warmup.count, r.inference.count, r.inference.min, r.inference.avg) == (40, 75, 11787, 12167.6)
    assert r.init_us == 126059
    assert "NNAPI delegate" in r.delegate


def test_tf1_summary_format():
    r = parse_benchmark_output(TF1_ANDROID)
    assert (r.warmup.count, r.inference.count, r.inference.min, r.inference.std) == (7, 15, 66699, 39)
    assert (r.init_us, r.warmup_avg_us, r.inference_avg_us) == (9933, 76605.9, 66767.6)
    assert r.first_inference_us == 127425  # not in the TF1 summary: the warm-up's first run


@pytest.mark.parametrize("text, want", [(FAIL_XNNPACK, "Failed to apply XNNPACK delegate."),
                                        (FAIL_EXTERNAL, "Failed to apply EXTERNAL delegate.")])
def test_failures_name_the_reason(text, want):
    with pytest.raises(BenchmarkFailed) as e:
        parse_benchmark_output(text)
    msg = str(e.value)
    assert want in msg and "Benchmarking failed." in msg and "\n" not in msg


def test_percentile_lines():
    w, r = (_stats(__import__("device_profiler.adb", fromlist=["_strip"])._strip(l)) for l in PERCENTILE_LINES)
    assert (w.count, w.median, w.p5, w.p95) == (3, 200386, 199462, 235158)
    assert r.ms()["median"] == 141.253 and r.ms()["min"] == 140.071
    # The same, as a whole run: the second announced phase is the timed one.
    text = ("Running benchmark for at least 1 iterations and at least 0 seconds but terminate if exceeding 150 seconds.\n"
            + PERCENTILE_LINES[0] + "\nRunning benchmark for at least 25 iterations and at least 0 seconds but "
            "terminate if exceeding 150 seconds.\n" + PERCENTILE_LINES[1] + "\n")
    out = parse_benchmark_output(text)
    assert out.inference.median == 141253 and out.warmup.median == 200386


def test_all_same_and_empty_phases():
    st = _stats("count=5 curr=1234(all same)")
    assert (st.count, st.min, st.max, st.avg, st.median, st.std) == (5, 1234, 1234, 1234, 1234, 0)
    text = ("Running benchmark for at least 0 iterations and at least -1 seconds but terminate if exceeding 150 seconds.\n"
            "count=0\n\nRunning benchmark for at least 3 iterations and at least 0 seconds but terminate if exceeding "
            "150 seconds.\ncount=3 first=900 curr=800 min=800 max=900 avg=833.333 std=47\n")
    out = parse_benchmark_output(text)
    assert out.warmup.count == 0 and out.inference.count == 3 and out.inference.min == 800


def test_truncated_output_fails():
    cut = CPU_RISCV.split("Running benchmark for at least 50")[0]  # killed during the timed runs
    with pytest.raises(BenchmarkFailed):
        parse_benchmark_output(cut)
    with pytest.raises(BenchmarkFailed, match="printed nothing"):
        parse_benchmark_output("")
    assert failure_message("/system/bin/sh: /data/local/tmp/benchmark_model: not found\n").endswith("not found")


def test_cpus_and_command():
    assert parse_cpus("4-7") == [4, 5, 6, 7] and cpu_mask([4, 5, 6, 7]) == "f0"
    assert parse_cpus("0,2,4-5") == [0, 2, 4, 5] and cpu_mask([0, 2, 4, 5]) == "35"
    assert parse_cpus(None) is None
    for bad in ("7-4", "x", "64"):
        with pytest.raises(UsageError, match="--cpus"):
            parse_cpus(bad)
    cmd = benchmark_command("/data/local/tmp/benchmark_model", "/data/local/tmp/v.tflite", threads=1, warmup_runs=3,
                            warmup_min_secs=0.5, num_runs=20, use_xnnpack=True, cpus=[4, 5, 6, 7])
    assert cmd == ("taskset f0 /data/local/tmp/benchmark_model --graph=/data/local/tmp/v.tflite --num_threads=1 "
                   "--warmup_runs=3 --warmup_min_secs=0.5 --num_runs=20 --min_secs=0 --max_secs=150 "
                   "--use_xnnpack=true")
    assert "--use_gpu=true" in benchmark_command("b", "g", use_gpu=True)
    assert "taskset" not in benchmark_command("b", "g") and "xnnpack" not in benchmark_command("b", "g")


def test_one_reader_of_host_cpus_values():
    # device_profiler.checks.cores reads every host --cpus value (the phone's taskset form above is adb's own)
    import argparse
    from device_profiler.checks import cores, cpu_list
    assert cores("0") == [0] and cores("0,1") == [0, 1] and cores("none") is None and cores(None) is None
    for bad in ("abc", "", "-1", "0,,1"):
        with pytest.raises(ValueError, match="comma-separated core numbers"):
            cores(bad)
        with pytest.raises(argparse.ArgumentTypeError, match=repr(bad)):
            cpu_list(bad)
    assert cpu_list("0,1") == "0,1"
