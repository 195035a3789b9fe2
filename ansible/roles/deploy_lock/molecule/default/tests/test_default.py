"""The lock is a directory with holder.json naming who holds it, for which tag, since when."""

import json


def test_lock_directory_names_its_holder(host):
    lock = host.file(host.user().home + "/molecule-locks/staging.lock")
    assert lock.is_directory and lock.mode == 0o700
    holder = json.loads(host.file(lock.path + "/holder.json").content_string)
    assert holder["id"] == "molecule-converge"
    assert holder["tag"] == "sha-1234567" and holder["env"] == "staging"
    assert holder["actor"] and holder["since"] and holder["controller"]
