"""The demo/bench image server: serves the folder's files from memory, nothing outside it."""

from __future__ import annotations

import httpx

from vitrine.image_server import ImageServer


def test_serves_files_of_the_folder_only(tmp_path):
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    (root / "a.jpg").write_bytes(b"\xff\xd8 jpeg")
    (root / ".env").write_text("SECRET=1")
    (root / "sub" / "b.png").write_bytes(b"png")
    (tmp_path / "outside.jpg").write_bytes(b"outside")
    (root / "link.jpg").symlink_to(tmp_path / "outside.jpg")
    with ImageServer(root) as server:
        ok = httpx.get(server.url("a.jpg"))
        assert ok.status_code == 200 and ok.content == b"\xff\xd8 jpeg" and ok.headers["content-type"] == "image/jpeg"
        for path in (".env", "sub/b.png", "sub", "../outside.jpg", "%2e%2e/outside.jpg", "link.jpg", "missing.jpg"):
            assert httpx.get(f"{server.base_url}/{path}").status_code == 404, path
        (root / "a.jpg").write_bytes(b"changed")
        assert httpx.get(server.url("a.jpg")).content == b"\xff\xd8 jpeg"  # read once, then from memory
