"""The GraphQL schema the RunPod fake serves: the types and operations real clients send.

Type and input names are the ones clients declare in their variables (`EndpointInput`,
`SaveTemplateInput`, `GpuTypeFilter`, `CreateFlashAppInput`, ...), so a query that runs here
declares them as it would against api.runpod.io; an unknown field, a missing non-null field or a
value of the wrong type is rejected by graphql-core's validation, as the real server rejects it.
Field sets are the union of what tetra-rp 0.20.0, runpod-python 1.12 and flash 1.19 select
(runpod_api.md §2, flash_facts.md §10.1). Names no client spells out (the inline template's
input type) are ours: no query can declare them.
"""

from __future__ import annotations

from string import Template

from graphql import GraphQLSchema, build_schema

# The settings a client saves and reads back: an input and its output type list the same scalar
# fields, so each list is written once here and the two cannot drift apart.
_ENDPOINT_SETTINGS = """\
  gpuIds: String
  gpuCount: Int
  allowedCudaVersions: String
  minCudaVersion: String
  instanceIds: [String]
  locations: String
  networkVolumeId: String
  idleTimeout: Int
  executionTimeoutMs: Int
  scalerType: String
  scalerValue: Int
  workersMin: Int
  workersMax: Int
  workersStandby: Int
  workersPFBTarget: Int
  type: String
  flashBootType: FlashBootType
  flashEnvironmentId: String
"""

_TEMPLATE_SETTINGS = """\
  containerDiskInGb: Int
  containerRegistryAuthId: String
  dockerArgs: String
  readme: String
  isServerless: Boolean
  isPublic: Boolean
  startSsh: Boolean
  volumeInGb: Int
  volumeMountPath: String
  ports: String
  startScript: String
  advancedStart: Boolean
  config: JSON
"""

SDL = Template("""
scalar JSON

enum FlashBootType { FLASHBOOT }

input EnvironmentVariableInput { key: String! value: String! }

type EnvironmentVariable { key: String value: String }

input EndpointTemplateInput {
  advancedStart: Boolean
  config: JSON
  containerDiskInGb: Int
  containerRegistryAuthId: String
  dockerArgs: String
  env: [EnvironmentVariableInput]
  imageName: String!
  isServerless: Boolean
  name: String
  ports: String
  readme: String
  startScript: String
  volumeInGb: Int
}

input NetworkVolumeRefInput { networkVolumeId: String! dataCenterId: String }

input EndpointInput {
  id: String
  name: String
  templateId: String
  template: EndpointTemplateInput
  networkVolumeIds: [NetworkVolumeRefInput]
$endpoint_settings}

type NetworkVolumeRef { networkVolumeId: String dataCenterId: String }

type NetworkVolume {
  id: String
  name: String
  size: Int
  dataCenterId: String
  flashEnvironmentId: String
}

type PodTemplate {
  id: String!
  name: String
  imageName: String
  env: [EnvironmentVariable]
$template_settings}

type Endpoint {
  id: String!
  name: String
  aiKey: String
  userId: String
  templateId: String
  template: PodTemplate
  env: [EnvironmentVariable]
  computeType: String
  networkVolumeIds: [NetworkVolumeRef]
  networkVolume: NetworkVolume
  version: Int
$endpoint_settings  activeBuildid: String
  idePodId: String
  createdAt: String
}

input SaveTemplateInput {
  id: String
  name: String!
  imageName: String!
  env: [EnvironmentVariableInput]!
$template_settings}

input UpdateEndpointTemplateInput { templateId: String! endpointId: String! }

input GpuTypeFilter { id: String ids: [String] }

input GpuLowestPriceInput {
  gpuCount: Int
  dataCenterId: String
  minMemoryInGb: Int
  minVcpuCount: Int
  secureCloud: Boolean
  compliance: [String]
  countryCode: String
  globalNetwork: Boolean
  includeAiApi: Boolean
}

type LowestPrice { minimumBidPrice: Float uninterruptablePrice: Float stockStatus: String }

type GpuType {
  id: String!
  displayName: String
  manufacturer: String
  memoryInGb: Int
  cudaCores: Int
  secureCloud: Boolean
  communityCloud: Boolean
  securePrice: Float
  communityPrice: Float
  communitySpotPrice: Float
  secureSpotPrice: Float
  oneWeekPrice: Float
  oneMonthPrice: Float
  threeMonthPrice: Float
  maxGpuCount: Int
  maxGpuCountCommunityCloud: Int
  maxGpuCountSecureCloud: Int
  minPodGpuCount: Int
  nodeGroupGpuSizes: [Int]
  throughput: Int
  lowestPrice(input: GpuLowestPriceInput): LowestPrice
}

type CpuType {
  id: String!
  displayName: String
  manufacturer: String
  cores: Int
  threadsPerCore: Int
  groupId: String
}

input CpuFlavorInput { id: String }

input SpecificsInput { dataCenterId: String instanceId: String }

type CpuSpecifics { stockStatus: String securePrice: Float slsPrice: Float }

type CpuFlavor {
  id: String!
  groupId: String
  groupName: String
  displayName: String
  minVcpu: Int
  maxVcpu: Int
  vcpuBurstable: Boolean
  ramMultiplier: Int
  diskLimitPerVcpu: Int
  specifics(input: SpecificsInput): CpuSpecifics
}

type FlashArtifact { objectKey: String downloadUrl: String expiresAt: String }

type FlashBuild {
  id: String!
  flashAppId: String
  objectKey: String
  createdAt: String
  manifest: JSON
  resourceSpec: JSON
}

type FlashEnvironment {
  id: String!
  flashAppId: String
  name: String
  state: String
  activeBuildId: String
  createdAt: String
  activeArtifact: FlashArtifact
  endpoints: [Endpoint]
  networkVolumes: [NetworkVolume]
}

type FlashApp {
  id: String!
  name: String
  createdAt: String
  flashEnvironments: [FlashEnvironment]
  flashBuilds: [FlashBuild]
}

type FlashUpload { uploadUrl: String objectKey: String expiresAt: String }

type User {
  id: String!
  email: String
  pubKey: String
  endpoints: [Endpoint]
  endpoint(id: String!): Endpoint
  flashApps: [FlashApp]
  networkVolumes: [NetworkVolume]
}

input CreateFlashAppInput { name: String! }
input CreateFlashEnvironmentInput { flashAppId: String! name: String! }
input PrepareFlashArtifactUploadInput { flashAppId: String! tarballSize: Int! }
input FinalizeFlashArtifactUploadInput { flashAppId: String! objectKey: String! }
input DeployBuildToEnvironmentInput { flashEnvironmentId: String! flashBuildId: String! }
input UpdateFlashBuildManifestInput { flashBuildId: String! manifest: JSON! }
input AddEndpointToEnvironmentInput { flashEnvironmentId: String! endpointId: String! }
input AddNetworkVolumeToEnvironmentInput { flashEnvironmentId: String! networkVolumeId: String! }
input UpdateFlashEnvironmentInput { flashEnvironmentId: String! status: String }
input FlashEnvironmentByNameInput { flashAppId: String! name: String! }

type Query {
  myself: User
  podTemplate(id: String!): PodTemplate
  gpuTypes(input: GpuTypeFilter): [GpuType]
  cpuTypes: [CpuType]
  cpuFlavors(input: CpuFlavorInput): [CpuFlavor]
  flashApp(flashAppId: String!): FlashApp
  flashAppByName(flashAppName: String!): FlashApp
  flashEnvironment(flashEnvironmentId: String!): FlashEnvironment
  flashEnvironmentByName(input: FlashEnvironmentByNameInput!): FlashEnvironment
  flashBuild(flashBuildId: String!): FlashBuild
}

type Mutation {
  saveEndpoint(input: EndpointInput!): Endpoint
  deleteEndpoint(id: String!): Boolean
  saveTemplate(input: SaveTemplateInput): PodTemplate
  deleteTemplate(templateName: String!): Boolean
  updateEndpointTemplate(input: UpdateEndpointTemplateInput!): Endpoint
  createFlashApp(input: CreateFlashAppInput!): FlashApp
  createFlashEnvironment(input: CreateFlashEnvironmentInput!): FlashEnvironment
  prepareFlashArtifactUpload(input: PrepareFlashArtifactUploadInput!): FlashUpload
  finalizeFlashArtifactUpload(input: FinalizeFlashArtifactUploadInput!): FlashBuild
  deployBuildToEnvironment(input: DeployBuildToEnvironmentInput!): FlashEnvironment
  updateFlashBuildManifest(input: UpdateFlashBuildManifestInput!): FlashBuild
  addEndpointToFlashEnvironment(input: AddEndpointToEnvironmentInput!): Endpoint
  addNetworkVolumeToFlashEnvironment(input: AddNetworkVolumeToEnvironmentInput!): NetworkVolume
  updateFlashEnvironment(input: UpdateFlashEnvironmentInput!): FlashEnvironment
  deleteFlashApp(flashAppId: String!): Boolean
  deleteFlashEnvironment(flashEnvironmentId: String!): Boolean
}
""").substitute(endpoint_settings=_ENDPOINT_SETTINGS, template_settings=_TEMPLATE_SETTINGS)


def build() -> GraphQLSchema:
    """Parse the SDL into an executable schema (resolvers come from the root value)."""
    return build_schema(SDL)
