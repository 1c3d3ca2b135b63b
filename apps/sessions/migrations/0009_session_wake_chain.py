from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("fl_sessions", "0008_composite_indexes_for_filtered_lists"),
    ]

    operations = [
        migrations.AddField(
            model_name="session",
            name="wake_pending",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="session",
            name="wake_token",
            field=models.CharField(blank=True, default="", max_length=32),
        ),
    ]
