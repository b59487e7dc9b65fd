"""Derived ids: one cause, one id, the same as before the helper existed."""

from esim_core.ids import derived_id, namespace

RENEWAL = "5b0f2a4e-8d8b-4a53-9f5c-3d9a7f1e2c11"


def test_a_redo_derives_the_same_id_and_another_cause_another() -> None:
    billing = namespace("billing")
    assert derived_id(billing, f"payment-settled:{RENEWAL}") == derived_id(
        billing, f"payment-settled:{RENEWAL}"
    )
    assert derived_id(billing, f"payment-failed:{RENEWAL}") != derived_id(
        billing, f"payment-settled:{RENEWAL}"
    )
    assert derived_id(namespace("provisioning"), RENEWAL) != derived_id(billing, RENEWAL)


def test_ids_already_published_keep_their_value() -> None:
    # Consumers' inboxes know events by these ids: a new formula would make a redo look new.
    assert (
        derived_id(namespace("billing"), f"payment-settled:{RENEWAL}")
        == "36cd6bdb-3e70-50c4-a37d-c8a0795b3861"
    )
