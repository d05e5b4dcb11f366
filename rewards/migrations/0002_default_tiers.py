from django.db import migrations

# FunPump's published tiers: rate rises with launches.
DEFAULT_TIERS = [
    ("BRONZE", 0, 0, 500),
    ("SILVER", 5, 0, 1000),
    ("GOLD", 15, 0, 1500),
    ("PLATINUM", 30, 0, 2000),
    ("DIAMOND", 50, 0, 2500),
]


def create_tiers(apps, schema_editor):
    tier = apps.get_model("rewards", "RewardTier")
    for name, min_launches, min_volume, rate_bps in DEFAULT_TIERS:
        tier.objects.get_or_create(
            name=name,
            defaults={"min_launches": min_launches, "min_volume": min_volume, "rate_bps": rate_bps},
        )


def remove_tiers(apps, schema_editor):
    apps.get_model("rewards", "RewardTier").objects.filter(
        name__in=[name for name, *_ in DEFAULT_TIERS]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [("rewards", "0001_initial")]

    operations = [migrations.RunPython(create_tiers, remove_tiers)]
