"""Prints a deployed stack's outputs as JSON and applies what the local emulator's
CloudFormation leaves out: DynamoDB TTL specifications, and the HTTP API's routes (one
`$default` route to the API function, which does its own routing)."""
import json
import os
import sys

import boto3

stack = sys.argv[1]
cloudformation = boto3.client("cloudformation")
outputs = {
    o["OutputKey"]: o["OutputValue"]
    for o in cloudformation.describe_stacks(StackName=stack)["Stacks"][0].get("Outputs", [])
}
dynamodb = boto3.client("dynamodb")
for key in ("ResumeTableName", "LedgerTableName", "EventsTableName", "ParkedEventsTableName", "FlowTableName"):
    table = outputs.get(key)
    if not table:
        continue
    current = dynamodb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    if current.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
        dynamodb.update_time_to_live(
            TableName=table,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": "expiresAt"},
        )
api_id, function = outputs.get("ApiId"), outputs.get("ApiFunctionName")
if api_id and function:
    apigw = boto3.client("apigatewayv2")
    routes = apigw.get_routes(ApiId=api_id).get("Items", [])
    if not any(r.get("RouteKey") == "$default" for r in routes):
        arn = boto3.client("lambda").get_function(FunctionName=function)["Configuration"]["FunctionArn"]
        integration = apigw.create_integration(
            ApiId=api_id, IntegrationType="AWS_PROXY", IntegrationUri=arn, PayloadFormatVersion="2.0"
        )
        apigw.create_route(ApiId=api_id, RouteKey="$default", Target=f"integrations/{integration['IntegrationId']}")
    endpoint = os.environ["AWS_ENDPOINT_URL"].rstrip("/")
    outputs["LocalApiUrl"] = f"{endpoint}/_aws/execute-api/{api_id}/$default"
print(json.dumps(outputs, indent=2))
