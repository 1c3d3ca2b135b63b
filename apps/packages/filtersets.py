from apps.packages.models import ComputePackage
from controlplane.api.filters import FednFilter, FednFilterSet, add_aliases


class ComputePackageFilterSet(FednFilterSet):
    name = FednFilter()
    description = FednFilter()
    file_name = FednFilter()
    storage_file_name = FednFilter()
    helper = FednFilter()
    id = FednFilter(field_name="package_id")
    sha256 = FednFilter()

    class Meta:
        model = ComputePackage
        fields: list[str] = []


add_aliases(
    ComputePackageFilterSet,
    {"fileName": "file_name", "storageFileName": "storage_file_name", "helper_type": "helper"},
)
