"""Request-log masking: personal identifiers never reach the log."""

from __future__ import annotations

import pytest

from allinone.logs import RequestRecord, mask


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("电话13812345678请回电", "电话<phone>请回电"),
        ("call +86 138-1234-5678 now", "call <phone> now"),
        ("手机：138 1234 5678。", "手机：<phone>。"),
        ("座机 010-62345678", "座机 <phone>"),
        ("US office +1 415 555 0100", "US office <phone>"),
        ("邮箱zhang.san+hotel@mail.example.com.cn谢谢", "邮箱<email>谢谢"),
        ("身份证号11010519491231002X，", "身份证号<id>，"),
        ("old id 110105491231002 ok", "old id <id> ok"),
        ("订单号 20240101 共 3 晚 299 元", "订单号 20240101 共 3 晚 299 元"),  # short numbers stay
        ("房间 1208，楼层 12", "房间 1208，楼层 12"),
    ],
)
def test_mask_replaces_phones_emails_and_id_numbers(text: str, masked: str) -> None:
    assert mask(text) == masked


def test_log_line_masks_before_clipping_so_a_cut_number_does_not_leak() -> None:
    record = RequestRecord("r1", "POST", "/analyze", input="x" * 8 + "13812345678")
    line = record.as_log(input_chars=12)
    assert "1381234" not in line["input"] and line["input"].startswith("xxxxxxxx<pho")
