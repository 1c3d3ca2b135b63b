from django.db import migrations

# The statuses of ACTIVE_SESSION_STATUSES when this migration was written.
ACTIVE = ("Initialized", "Started", "Stopping")


def hold_for_active_sessions(apps, schema_editor):
    Session = apps.get_model("fl_sessions", "Session")
    FederationHold = apps.get_model("controlplane", "FederationHold")
    for session_id in Session.objects.filter(status__in=ACTIVE).values_list("session_id", flat=True):
        FederationHold.objects.get_or_create(holder=session_id)


class Migration(migrations.Migration):
    dependencies = [
        ("fl_sessions", "0004_round_retries"),
        ("controlplane", "0001_initial"),
    ]

    operations = [migrations.RunPython(hold_for_active_sessions, migrations.RunPython.noop)]
