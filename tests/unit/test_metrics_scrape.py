"""tools.metrics reads Prometheus text the way Prometheus does."""

from __future__ import annotations

from tools.metrics import sample_sum

TEXT = """\
# HELP embeds_rejections_total Requests rejected before the engine, by rule
# TYPE embeds_rejections_total counter
embeds_rejections_total{model="tiny",rule="hidden_size"} 3
embeds_rejections_total{model="tiny",rule="not_finite"} 2
embeds_rejections_total{model="smollm2",rule="hidden_size"} 1
# HELP uptime_seconds Unlabelled
# TYPE uptime_seconds gauge
uptime_seconds 7.5
# HELP embeds_time_to_first_token_seconds TTFT
# TYPE embeds_time_to_first_token_seconds histogram
embeds_time_to_first_token_seconds_bucket{model="tiny",le="0.1"} 4
embeds_time_to_first_token_seconds_bucket{model="tiny",le="+Inf"} 5
embeds_time_to_first_token_seconds_sum{model="tiny"} 0.42
embeds_time_to_first_token_seconds_count{model="tiny"} 5
# HELP nv_inference_request_success Number of successful inference requests, all batch sizes
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="tiny",version="1"} 20
nv_inference_request_success{model="smollm2",version="1"} 4
"""


def test_labels_select_samples_and_the_rest_are_summed() -> None:
    assert sample_sum(TEXT, "embeds_rejections_total", model="tiny", rule="hidden_size") == 3
    assert sample_sum(TEXT, "embeds_rejections_total", model="tiny") == 5
    assert sample_sum(TEXT, "embeds_rejections_total") == 6
    assert sample_sum(TEXT, "embeds_rejections_total", model="absent") == 0


def test_an_unlabelled_sample_is_read() -> None:
    assert sample_sum(TEXT, "uptime_seconds") == 7.5
    assert sample_sum(TEXT, "uptime_seconds", model="tiny") == 0


def test_histogram_samples_are_named_in_full() -> None:
    assert sample_sum(TEXT, "embeds_time_to_first_token_seconds_count", model="tiny") == 5
    assert sample_sum(TEXT, "embeds_time_to_first_token_seconds_bucket", le="0.1") == 4
    assert sample_sum(TEXT, "embeds_time_to_first_token_seconds") == 0


def test_a_counter_without_the_total_suffix_is_read_by_its_exposed_name() -> None:
    """Triton names its counters without `_total`; prometheus_client's parser
    renames their samples, Prometheus does not."""
    assert sample_sum(TEXT, "nv_inference_request_success", model="tiny", version="1") == 20
    assert sample_sum(TEXT, "nv_inference_request_success") == 24
    assert sample_sum(TEXT, "nv_inference_request_success_total") == 24
    assert sample_sum(TEXT, "embeds_rejections_total") == 6
