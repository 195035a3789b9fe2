"""Pruning keeps the images of the newest N successful tags (both environments) and removes the rest."""


def tags(host):
    out = host.check_output("docker images molecule.local/llm-history --format '{{.Tag}}'")
    return set(out.split())


def test_newest_two_successful_tags_are_kept_older_ones_pruned(host):
    assert tags(host) == {"sha-2222222", "sha-3333333"}
