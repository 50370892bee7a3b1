import pytest

from cavachon_like.model import ComponentGraph


def graph(parents, modalities=None):
    modalities = modalities or {c: [c] for c in parents}
    return ComponentGraph(parents, modalities)


def test_topological_order_and_relatives():
    g = graph({"rna": ["atac"], "atac": [], "protein": ["rna"], "mirna": ["atac"]})
    order = g.order
    assert order.index("atac") < order.index("rna") < order.index("protein")
    assert order.index("atac") < order.index("mirna")
    assert g.ancestors("protein") == ["atac", "rna"]
    assert g.closure(["protein"]) == ["atac", "rna", "protein"]
    assert g.closure(["mirna"]) == ["atac", "mirna"]


def test_parent_named_by_modality_resolves_to_component():
    g = ComponentGraph({"joint": [], "child": ["rna"]}, {"joint": ["rna", "atac"], "child": ["protein"]})
    assert g.parents("child") == ["joint"]


def test_cycle_is_named():
    with pytest.raises(ValueError, match=r"cycle .*a.*b|cycle .*b.*a"):
        graph({"a": ["b"], "b": ["a"]})


def test_unknown_parent_is_named():
    with pytest.raises(ValueError, match="unknown parent 'chromatin'"):
        graph({"rna": ["chromatin"]})


def test_modality_claimed_twice_is_named():
    with pytest.raises(ValueError, match="modality 'rna' is claimed by components 'a' and 'b'"):
        ComponentGraph({"a": [], "b": []}, {"a": ["rna"], "b": ["rna", "atac"]})


def test_self_parent_and_all_errors_reported_together():
    with pytest.raises(ValueError) as error:
        graph({"a": ["a"], "b": ["nope"]})
    assert "lists itself" in str(error.value) and "'nope'" in str(error.value)
